"""Turn a notebook annotated with Kale's cell tags into one annotated with our magics.

Kale keeps its annotations in cell tags and the ``kubeflow_notebook`` notebook
metadata; kale-magic keeps them in the cells' first lines.  The conversion is a
pure nbformat transformation: cell order, outputs and markdown are kept, each
annotated code cell gains a magic line, a ``%load_ext kale_magic`` cell goes
before the first code cell and a ``%kale_run`` cell carrying the pipeline
metadata goes at the end.  What has no equivalent is kept (unknown tags stay in
the cell's metadata) and reported in :attr:`Conversion.notes`, never dropped
silently.  The grouping rules are Kale's own (``NotebookProcessor.parse_notebook``)
so a converted notebook makes the same pipeline Kale would have made.
"""

from __future__ import annotations

import ast
import copy
import re
import shlex
from dataclasses import dataclass, field

from ..errors import ValidationError
from ..plan.analysis import metric_names
from ..extension.arguments import check_step_option
from .katib import sweep_lines

KALE_METADATA = "kubeflow_notebook"
SPECIAL_KINDS = {  # Kale tag -> our cell magic
    "imports": "imports",
    "functions": "functions",
    "pipeline-parameters": "parameters",
    "pipeline-metrics": "metrics",
    "skip": "skip",
}
_NAME = r"[_a-z][_a-z0-9]*"
_STEP_TAG = re.compile(rf"^(?:step|block):({_NAME})?$")
_PREV_TAG = re.compile(rf"^prev:({_NAME})$")
_LIMIT_TAG = re.compile(r"^limit:([_a-z\-./]+):([_a-zA-Z0-9.]+)$")
_IMAGE_TAG = re.compile(r"^image:(.+)$")
_CACHE_TAG = re.compile(r"^cache:(enabled|disabled)$")
_LIMIT_OPTIONS = {"nvidia.com/gpu": "gpu", "cpu": "cpu", "memory": "memory"}
# Metadata keys Kale's panel writes that have no meaning outside Kubeflow/Rok.
_IGNORED_METADATA = {"experiment", "notebook_path", "snapshot_volumes", "autosnapshot",
                     "volume_access_mode", "katib_run", "kale_version"}


@dataclass(frozen=True)
class Note:
    """One thing the conversion could not carry over exactly; ``cell`` is 1-based, None for the notebook."""

    cell: int | None
    message: str

    def __str__(self):
        where = "notebook metadata" if self.cell is None else f"cell {self.cell}"
        return f"{where}: {self.message}"


@dataclass
class Conversion:
    notebook: object  # nbformat.NotebookNode
    notes: list[Note] = field(default_factory=list)


@dataclass
class _CellTags:
    """What one cell's Kale tags say."""

    kind: str | None = None  # a SPECIAL_KINDS key, "step", or None (untagged)
    step: str | None = None
    after: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # our %%step option -> value
    unknown: list[str] = field(default_factory=list)  # tags kept in the metadata


def is_kale_notebook(nb) -> bool:
    """True when some code cell carries a tag of Kale's annotation language."""
    return any(_is_kale_tag(tag) for cell in nb.cells if cell.cell_type == "code"
               for tag in cell.get("metadata", {}).get("tags", []))


def _is_kale_tag(tag) -> bool:
    return isinstance(tag, str) and (
        tag in SPECIAL_KINDS or any(p.match(tag) for p in (_STEP_TAG, _PREV_TAG, _LIMIT_TAG,
                                                           _IMAGE_TAG, _CACHE_TAG))
        or tag in ("step:", "block:"))


def convert(nb) -> Conversion:
    """Return a converted copy of ``nb`` (a v4 notebook, ours or nbformat's) and what needs the user's eye."""
    nb = copy.deepcopy(nb)
    notes: list[Note] = []
    defaults = _steps_defaults(nb.metadata.get(KALE_METADATA, {}), notes)
    parsed = [(i, cell, _parse_tags(cell, i, notes)) for i, cell in enumerate(nb.cells, 1)
              if cell.cell_type == "code"]
    step_options = _collect_step_options(parsed, defaults, notes)
    previous = None  # the kind (or step) that an untagged cell continues, as Kale tracks it
    seen_steps: set[str] = set()
    metric_cells = []
    for index, cell, tags in parsed:
        tags = _effective_tags(cell, index, tags, previous, notes)
        if tags is None:
            continue
        if tags.kind == "step":
            first = tags.step not in seen_steps
            _check_after(tags, seen_steps, index)
            root = first and bool(seen_steps)  # Kale: no prev tag, no parent; ours: the step above
            seen_steps.add(tags.step)
            _annotate(cell, "step " + _step_arguments(tags, step_options[tags.step], first, root))
        elif tags.kind == "pipeline-metrics":
            metric_cells.append((index, cell, metric_names(cell.source, f"Cell {index} (pipeline-metrics)", prints_only=True)))
        else:
            _annotate(cell, SPECIAL_KINDS[tags.kind])
        previous = _CellTags(kind=tags.kind, step=tags.step)
    _annotate_metrics(nb, metric_cells, notes)
    _add_ids(nb)
    add_load_ext(nb)
    _add_kale_run(nb, notes)
    return Conversion(nb, notes)


def _effective_tags(cell, index: int, tags: _CellTags, previous: _CellTags | None,
                    notes: list[Note]) -> _CellTags | None:
    """What a cell belongs to: its own tags, or (untagged) what Kale would merge it into.

    None when the cell is done with: skipped (annotated %%skip here), empty, or ours already.
    """
    if tags.kind == "skip":  # Kale does not let a skipped cell change what comes next
        _annotate(cell, "skip")
        return None
    if tags.kind is not None:
        return tags
    if not cell.source.strip() or _is_ours(cell.source):
        return None
    if previous is None:
        notes.append(Note(index, "untagged code before the first annotated cell; "
                                 "Kale leaves it out of the pipeline, converted to %%skip"))
        _annotate(cell, "skip")
        return None
    return previous


def _is_ours(source: str) -> bool:
    """Lines of ours already in the notebook (``%load_ext kale_magic``, ``%kale_run``) stay as they are."""
    first = source.lstrip().split("\n", 1)[0]
    return first.startswith(("%load_ext kale_magic", "%kale_", "run = %kale_run"))


# tags ------------------------------------------------------------------------
def _parse_tags(cell, index: int, notes: list[Note]) -> _CellTags:
    """Read Kale's tags off a code cell; the ones we translate leave its metadata."""
    result = _CellTags()
    steps = []
    tags = list(cell.get("metadata", {}).get("tags", []))
    for tag in tags:
        try:
            known = _read_tag(tag, result, steps)
        except ValueError as exc:
            raise ValidationError(f"Cell {index}: tag {tag!r}: {exc}.") from None
        if not known:
            result.unknown.append(tag)
    special = [t for t in tags if t in SPECIAL_KINDS]
    if special:
        result.kind = special[0]  # Kale lets the first special tag win
    elif steps:
        if len(set(steps)) > 1:
            raise ValidationError(f"Cell {index} is tagged with several steps ({', '.join(steps)}); "
                                  f"Kale and kale-magic put a cell in one step: keep one step tag.")
        result.kind, result.step = "step", steps[0]
    elif result.after or result.options:
        raise ValidationError(f"Cell {index} has prev:/limit:/image:/cache: tags but no step:NAME "
                              f"tag; add the step tag or remove the others.")
    for tag in result.unknown:
        notes.append(Note(index, f"tag {tag!r} has no kale-magic equivalent; "
                                 f"kept in the cell's metadata"))
    if tags:
        kept = [t for t in tags if t in result.unknown]
        if kept:
            cell.metadata["tags"] = kept
        else:
            del cell.metadata["tags"]
    return result


def _read_tag(tag, result: _CellTags, steps: list[str]) -> bool:
    """Apply one tag to ``result``; False when it is not one we translate, ValueError for a bad value
    (the checks of ``%%step``'s options)."""
    if not isinstance(tag, str):
        return False
    if tag in SPECIAL_KINDS or tag in ("step:", "block:"):  # an empty step tag means untagged
        return True
    if m := _STEP_TAG.match(tag):
        steps.append(m.group(1))
    elif m := _PREV_TAG.match(tag):
        result.after.append(m.group(1))
    elif (m := _LIMIT_TAG.match(tag)) and m.group(1) in _LIMIT_OPTIONS:
        result.options[_LIMIT_OPTIONS[m.group(1)]] = _checked_limit(m)
    elif m := _IMAGE_TAG.match(tag):
        result.options["image"] = check_step_option("image", m.group(1))
    elif m := _CACHE_TAG.match(tag):
        result.options["no-cache"] = m.group(1) == "disabled"
    else:
        return False
    return True


def _steps_defaults(meta: dict, notes: list[Note]) -> dict[str, str]:
    """Kale's ``steps_defaults`` limits apply to every step; other defaults have no equivalent."""
    defaults = {}
    for entry in meta.get("steps_defaults") or []:
        m = _LIMIT_TAG.match(entry) if isinstance(entry, str) else None
        if m and m.group(1) in _LIMIT_OPTIONS:
            try:
                defaults[_LIMIT_OPTIONS[m.group(1)]] = _checked_limit(m)
            except ValueError as exc:
                raise ValidationError(f"Notebook metadata: steps_defaults entry {entry!r}: {exc}.") from None
        else:
            notes.append(Note(None, f"steps_defaults entry {entry!r} has no kale-magic "
                                    f"equivalent; not applied"))
    return defaults


def _checked_limit(match: re.Match) -> str:
    """The value of a ``limit:RESOURCE:VALUE`` tag, as text for the ``%%step`` line."""
    option = _LIMIT_OPTIONS[match.group(1)]
    return str(check_step_option(option, match.group(2)))


def _collect_step_options(parsed, defaults: dict, notes: list[Note]) -> dict[str, dict]:
    """Options and parents of each step, gathered from all its cells (Kale reads the first only)."""
    options: dict[str, dict] = {}
    explicit: dict[str, set] = {}
    for index, _, tags in parsed:
        if tags.kind != "step":
            continue
        merged = options.setdefault(tags.step, {**defaults, "after": []})
        seen = explicit.setdefault(tags.step, set())
        for key, value in tags.options.items():
            if key in seen and merged[key] != value:
                notes.append(Note(index, f"step {tags.step!r} sets {key} twice "
                                         f"({merged[key]} and {value}); the later value wins"))
            merged[key] = value
            seen.add(key)
        merged["after"] += [a for a in tags.after if a not in merged["after"]]
    return options


def _check_after(tags: _CellTags, seen: set[str], index: int) -> None:
    for parent in tags.after:
        if parent not in seen:
            raise ValidationError(f"Cell {index} (step {tags.step!r}) has tag prev:{parent} but no "
                                  f"step {parent!r} is defined above it; tag that step's cells "
                                  f"first or fix the name.")


def _step_arguments(tags: _CellTags, options: dict, first: bool, root: bool) -> str:
    """``NAME [--after A,B] [--cpu C] ...``; options go on the step's first cell only.

    A later step without ``prev:`` tags has no parent in Kale, so it gets ``--after=``
    (none) rather than our default of the step above it.
    """
    if not first:
        return tags.step
    words = [tags.step]
    if options["after"]:
        words += ["--after", ",".join(options["after"])]
    elif root:
        words.append("--after=")
    for key in ("cpu", "memory", "gpu", "image"):
        if options.get(key):
            words += [f"--{key}", options[key]]
    if options.get("no-cache"):
        words.append("--no-cache")
    return magic_arguments(words)


def _annotate_metrics(nb, metric_cells, notes: list[Note]) -> None:
    """``%%metrics`` cells, without the parameters Kale's metrics cell printed but never logged.

    Kale logs a metric from the last step that assigns it; a pipeline parameter no
    step assigns is silently left out there, and would be a validation error here.
    """
    parameters = _assigned(nb, "%%parameters")
    computed = _assigned(nb, "%%step ")
    for index, cell, names in metric_cells:
        kept = []
        for name in names:
            if name in parameters and name not in computed:
                notes.append(Note(index, f"pipeline-metrics prints parameter '{name}', which no step "
                                         f"computes: Kale never logged it, so it is left out of %%metrics "
                                         f"(the run records it as a parameter)"))
            else:
                kept.append(name)
        _annotate(cell, "metrics", body="\n".join(kept))


def _assigned(nb, magic: str) -> set[str]:
    """Names assigned at any depth in the code cells that start with ``magic``."""
    names = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(magic):
            try:
                tree = ast.parse(cell.source.split("\n", 1)[1] if "\n" in cell.source else "")
            except SyntaxError:
                continue  # the run names the cell's syntax error
            names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


# cells -----------------------------------------------------------------------
def _annotate(cell, magic_line: str, body: str | None = None) -> None:
    source = cell.source if body is None else body
    cell.source = f"%%{magic_line}\n{source}"


def _add_ids(nb) -> None:
    """Cells need ids (nbformat 4.5) so the magics can tell cells of the same step apart."""
    from ..ipynb import new_cell_id

    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        nb.nbformat_minor = 5
    for cell in nb.cells:
        if not cell.get("id"):
            cell["id"] = new_cell_id()


def add_load_ext(nb) -> None:
    """A ``%load_ext kale_magic`` cell before the first code cell, unless one loads it already."""
    from ..ipynb import new_code_cell

    if any(c.cell_type == "code" and "%load_ext kale_magic" in c.source for c in nb.cells):
        return
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, new_code_cell("%load_ext kale_magic"))


def _add_kale_run(nb, notes: list[Note]) -> None:
    from ..ipynb import new_code_cell
    from .static import KALE_RUN

    if any(c.cell_type == "code" and KALE_RUN.search(c.source) for c in nb.cells):
        return
    lines = kale_run_lines(nb.metadata.get(KALE_METADATA, {}), notes)
    nb.cells.append(new_code_cell("\n".join(lines)))


def kale_run_lines(meta: dict, notes: list[Note]) -> list[str]:
    """``%config`` lines for the KFP settings, then the ``%kale_run`` line, saying what Kale's metadata said."""
    lines = []
    image = meta.get("docker_image") or meta.get("base_image")
    if image:
        lines.append(_config("base_image", str(image)))
    volumes = [v for v in (_volume(volume, notes) for volume in meta.get("volumes") or []) if v]
    if volumes:
        lines.append(_config("volumes", volumes))
    words = []
    for key, option in (("experiment_name", "--experiment"), ("pipeline_name", "--pipeline"),
                        ("pipeline_description", "--description")):
        if meta.get(key):
            words += [option, str(meta[key])]
    handled = {"experiment_name", "pipeline_name", "pipeline_description", "docker_image",
               "base_image", "volumes", "steps_defaults", "katib_metadata"} | _IGNORED_METADATA
    for key in sorted(set(meta) - handled):
        if meta[key] not in (None, "", [], {}):
            notes.append(Note(None, f"{KALE_METADATA}.{key} has no kale-magic equivalent; not applied"))
    sweep = sweep_lines(meta.get("katib_metadata") or {}, magic_arguments(words),
                        lambda text: notes.append(Note(None, text)), protect_from_expansion)
    return lines + [("run = %kale_run " + magic_arguments(words)).rstrip(), *sweep]


def _config(trait: str, value) -> str:
    """A ``%config Kale.<trait> = <value>`` line (the KFP engine's settings are traitlets)."""
    return f"%config Kale.{trait} = {protect_from_expansion(repr(value))}"


def _volume(volume: dict, notes: list[Note]) -> str | None:
    """An existing claim mounts as ``CLAIM:/mount/path``; Rok clones and new claims cannot."""
    name, mount, kind = volume.get("name"), volume.get("mount_point"), volume.get("type")
    if kind in ("pvc", "pv") and name and mount:
        return f"{name}:{mount}"
    notes.append(Note(None, f"volume {name or '?'} (type {kind}, mounted at {mount}) is not "
                            f"carried over: kale-magic mounts existing claims only"))
    return None


def magic_arguments(words: list[str]) -> str:
    """Words quoted for the magics' POSIX argument parser, the line protected from IPython's expansion."""
    return protect_from_expansion(" ".join(shlex.quote(w) for w in words))


# IPython's DollarFormatter expands ``$name`` unless an odd number of single quotes
# follows it in the same literal chunk; a doubled ``$$`` stays a literal ``$``.
_DOLLAR_FIELD = re.compile(r"(.*?)\$([\w.]+)(?=([^']*'[^']*')*[^']*$)")


def protect_from_expansion(text: str) -> str:
    """Double the braces and exactly the dollars IPython would expand, chunk by chunk as it parses.

    IPython expands ``$name`` and ``{expr}`` in a magic's line before the magic sees it.
    """
    import string

    chunks = [text for text, _, _, _ in string.Formatter().parse(
        text.replace("{", "{{").replace("}", "}}"))]
    return "".join(_DOLLAR_FIELD.sub(lambda m: f"{m.group(1)}$${m.group(2)}", chunk)
                   .replace("{", "{{").replace("}", "}}") for chunk in chunks)

"""How a Kubeflow step gets its Python environment on a stock image, installing once per pipeline run.

The compiled pipeline starts with one ``kale-environment`` task per step image. Like every lightweight
component it first gets kfp's runtime install (``pip install kfp==<the compiling version> --no-deps``).
Then it runs ``pip install --no-deps --target`` of the distributions the steps import, pinned to the
kernel's versions and minus those the image already has at that version, plus the exact kale-magic
that compiled the pipeline, and packs the result as one uncompressed tar per distribution, in several
output artifacts named at compile time from the pins: ``environment``, a folder holding the runtime group
(kfp's runtime, kale-magic, the step runtime's closure, ``_common``) and ``modules.json``, and one archive
``kale_env_<distribution>`` per other distribution. A step takes that folder and the archives of its own
requirements (KFP's launcher downloads every input artifact whole into the pod: ``launcher_v2.go``,
``downloadArtifacts``), unpacks, before anything else, only those its code imports (and the runtime group's
start-up part; those of the code's own imports in the background, settled before the code runs), another one
it received if its code imports it after all. Then it runs kfp's executor from
it: a step runs no pip at all. With KFP caching on, a later run with the same requirements reuses the
environment and installs nothing at all.

kale-magic is on no index, so the pipeline carries it without putting it in any container spec (see
:mod:`kale_magic.engines.kfp.delivery`): its wheel, and the notebooks of steps too large to sit in their
component's source, travel as one xz-compressed tar, the runtime bundle, imported from the pipeline
root as the task's ``kale_runtime`` input. The task's source names the bundle's digest, which also puts
it in KFP's cache key.

The environment task refuses, in one sentence, an image whose Python minor version is not the kernel's:
the pinned binary wheels would not load there. Both pieces of code here run before kale-magic is
importable, so they use the standard library only and are embedded in the component sources as text.
"""

from __future__ import annotations

import functools
import hashlib
import io
import lzma
import sys
import tarfile

ENVIRONMENT = "kale_environment"  # the steps' input, the environment task's output
NOTEBOOKS = "kale-notebooks"  # folder of the environment holding the carried step notebooks
RUNTIME = "kale_runtime"  # the environment task's input: the runtime bundle
ARCHIVE_INPUT = "kale_env_"  # + a distribution's archive name: its own output of the environment task

ENVIRONMENT_SOURCE = '''\
def {function}({runtime_input}environment: Output[Artifact]{archive_outputs}):
    """Install what the steps import, pinned to the notebook kernel's versions, and pack it for them."""
    import csv, hashlib, importlib.metadata, io, json, os, re, shutil, subprocess, sys, tarfile, tempfile
    python = {python!r}
    here = "%d.%d" % sys.version_info[:2]
    if here != python:
        raise SystemExit(f"the step image {image!r} runs Python {{here}} but the notebook's kernel runs Python "
                         f"{{python}}: choose an image with Python {{python}} (Kfp.base_image or --image)")
    carried = tempfile.mkdtemp(prefix="kale-runtime-")
    if {digest!r}:
        with open({runtime_name}.path, "rb") as bundle:
            data = bundle.read()
        if hashlib.sha256(data).hexdigest() != {digest!r}:
            raise SystemExit("the pipeline's kale-magic runtime bundle is not the one compiled: compile the "
                             "pipeline again")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
            tar.extractall(carried)
    requirements = {requirements!r}

    def installed(line):
        name, _, version = line.partition("==")
        try:
            return importlib.metadata.version(name) == version
        except importlib.metadata.PackageNotFoundError:
            return False

    # kfp always: this pod's kfp may be the one kfp's wrapper just installed, which the steps' pods lack
    missing = [line for line in requirements if line.startswith("kfp==") or not installed(line)]
    runtime = {runtime!r}
    if runtime and not installed(runtime):
        missing.append(os.path.join(carried, {wheel!r}))
    target = tempfile.mkdtemp(prefix="kale-environment-")
    if missing:
        print("installing", len(missing), "distributions:", " ".join(os.path.basename(m) for m in missing),
              flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-warn-script-location",
                        "--disable-pip-version-check", "--target", target, *{pip_options!r}, *missing], check=True)
    if os.path.isdir(os.path.join(carried, {notebooks!r})):
        shutil.move(os.path.join(carried, {notebooks!r}), target)
    # One tar per distribution (its RECORD's files), one of the rest (_common), and which archives hold each
    # top-level name: a step unpacks only the distributions it imports, the others when first imported
    # (STEP_PREAMBLE). Unpacking every file of a pandas + scikit-learn environment cost each step several
    # seconds; a directory artifact is uploaded and downloaded whole by KFP's launcher. Uncompressed: in a
    # step container gzip's decompression was half of the unpack's CPU (numpy: 1.05-1.26 s CPU for tar -xzf
    # of 24 MB of gzip, 0.30-0.72 s for tar -xf of its 72 MB; a pod's CPU is what its limit throttles), at
    # the price of a download ~3x larger (at an in-cluster object store's 100+ MB/s, a few tenths of a
    # second per 50 MB); stock Python images lack zstd or lz4, which would have both.
    os.makedirs(environment.path)
    owner, archives, modules, outputs = {{}}, {{}}, {{}}, {archive_paths}
    for entry in sorted(os.listdir(target)):
        if entry.endswith(".dist-info") and os.path.isfile(os.path.join(target, entry, "RECORD")):
            name = re.sub(r"[-_.]+", "_", entry[:-len(".dist-info")].rsplit("-", 1)[0]).lower()
            with open(os.path.join(target, entry, "RECORD"), encoding="utf-8", newline="") as record:
                for row in csv.reader(record):
                    path = os.path.normpath(row[0]) if row else ".."
                    if not path.startswith("..") and os.path.isfile(os.path.join(target, path)):
                        owner[path] = name
    for folder, _, files in os.walk(target):
        for file in files:
            path = os.path.relpath(os.path.join(folder, file), target)
            archives.setdefault(owner.get(path, "_common"), []).append(path)
    # a distribution of its own output (a file: the archive) unless it is of the runtime group (the folder);
    # one the image already had is an empty archive, so that every output the steps take exists
    for name in sorted(set(archives) | set(outputs)):
        with tarfile.open(outputs.get(name) or os.path.join(environment.path, name + ".tar"), "w",
                          format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(archives.get(name, ())):
                tar.add(os.path.join(target, path), arcname=path, recursive=False)
                top = path.split(os.sep)[0].split(".")[0]
                if name not in modules.setdefault(top, []):
                    modules[top].append(name)
    with open(os.path.join(environment.path, "modules.json"), "w", encoding="utf-8") as index:
        json.dump(modules, index, sort_keys=True)
    environment.metadata["installed"] = sorted(os.path.basename(line).partition("==")[0] for line in missing)
'''

STEP_PREAMBLE = '''\
    import importlib.machinery as _machinery, json as _json, os as _os, site as _site, sys as _sys
    _env = _os.environ["KALE_ENVIRONMENT"]  # unpacked by the step's bootstrap, on sys.path through PYTHONPATH
    _site.addsitedir(_env)  # its .pth files

    class _Unpack:  # the archives received but not unpacked at start: unpacked (or settled) when imported
        def __init__(self, archives, index, unpacked, pending):
            with open(index, encoding="utf-8") as modules:
                self.modules, self.archives, self.unpacked = _json.load(modules), archives, set(unpacked)
            self.pending = pending  # archive -> the folder the bootstrap unpacks it into in the background

        def settle(self, only=None):
            """Wait for the archives unpacking in the background (``only`` one) and move them into place; kale-magic
            calls it before any of the step's own code runs (component.py), so the step sees them whole."""
            import shutil, time
            for archive in [only] if only else list(self.pending):
                staged = self.pending.pop(archive)
                while not any(_os.path.exists(staged + end) for end in (".done", ".failed")):
                    time.sleep(0.002)
                if _os.path.exists(staged + ".done"):
                    before = set(_os.listdir(_env))
                    for entry in _os.listdir(staged):
                        self._merge(_os.path.join(staged, entry), _os.path.join(_env, entry))
                    self._site_files(_env, before)
                else:  # tar failed (its memory volume is full): unpack it here
                    shutil.rmtree(staged, ignore_errors=True)
                    self.unpack(archive)
                self.unpacked.add(archive)
            _machinery.PathFinder.invalidate_caches()

        def _site_files(self, folder, before):  # the .pth files an archive brought, as site processed the others
            for entry in sorted(set(_os.listdir(folder)) - before):
                if entry.endswith(".pth"):
                    _site.addpackage(folder, entry, None)

        def _merge(self, source, target):  # a folder another archive also has (a namespace package, bin): by entry
            if _os.path.isdir(source) and _os.path.isdir(target) and not _os.path.islink(target):
                for entry in _os.listdir(source):
                    self._merge(_os.path.join(source, entry), _os.path.join(target, entry))
            else:
                _os.replace(source, target)

        def find_spec(self, name, path=None, target=None):
            wanted = [a for a in self.modules.pop(name, []) if a not in self.unpacked] if path is None else []
            missing = [a for a in wanted if a not in self.archives]
            if missing:  # in the environment for another step: this one's code names no import of it
                print(f"kale-magic: this step imports {name} from {', '.join(missing)}, which its code does not "
                      "import by name, so the step did not receive it: import it in the step's cells or in "
                      "%%imports", file=_sys.stderr, flush=True)
            wanted = [a for a in wanted if a in self.archives]
            if not wanted:
                return None
            for archive in wanted:
                if archive in self.pending:
                    self.settle(archive)
                else:
                    self.unpack(archive)
                    self.unpacked.add(archive)
            _machinery.PathFinder.invalidate_caches()  # the folder's listing is cached
            return _machinery.PathFinder.find_spec(name, list(dict.fromkeys([self.place, _env])))

        place = _env  # where it unpacks: the environment's folder, on disk once the memory volume is full

        def unpack(self, archive):
            place = self.place
            before = set(_os.listdir(place))
            self._extract(archive)
            self._site_files(self.place, before if self.place == place else set())

        def _extract(self, archive):
            import subprocess, tarfile
            try:  # GNU tar: several times faster than tarfile
                if subprocess.run(["tar", "-xf", self.archives[archive], "-C", self.place]).returncode == 0:
                    return
            except FileNotFoundError:
                pass
            try:
                with tarfile.open(self.archives[archive]) as tar:
                    tar.extractall(self.place)
            except OSError:  # a memory volume fuller than the compile estimated: this archive and the rest on disk
                if self.place != _env:
                    raise
                import tempfile
                with tarfile.open(self.archives[archive]) as tar:  # its files in the volume are incomplete
                    for member in tar.getmembers():
                        if not member.isdir() and _os.path.lexists(_os.path.join(_env, member.name)):
                            _os.remove(_os.path.join(_env, member.name))
                self.place = tempfile.mkdtemp(prefix="kale-environment-")
                _sys.path.append(self.place)
                self._extract(archive)

    _sys.meta_path.append(_Unpack(_json.loads(_os.environ["KALE_ARCHIVES"]), _os.environ["KALE_INDEX"],
                                  _json.loads(_os.environ["KALE_UNPACKED"]),
                                  _json.loads(_os.environ.get("KALE_PENDING", "{}"))))
'''

# Runs first in a step's container, before kfp's executor (``python3 -c STEP_BOOTSTRAP <plan> <kfp's
# command>``). The environment reaches it as several inputs the launcher downloaded (where kfp's own
# ``Artifact.path`` puts them: gs://, minio://, s3:// under /gcs, /minio, /s3, launcher_v2.go's
# LocalPathForURI; a local path under kfp.local): ``kale_environment``, the runtime group's folder, and one
# ``kale_env_<distribution>`` archive per distribution of the step's own requirements. ``<plan>`` (JSON) names
# the archives the step's code imports, which it unpacks first, several ``tar`` processes at once (GNU tar
# unpacks a few times faster than Python's tarfile), into the memory volume when the pod has it (``memory``;
# ``disk``: why it has none), those of the code's own imports (``later``) in the background, and why the step
# received every archive if it did;
# then it execs kfp's command with the environment on PYTHONPATH, so the kfp it carries runs the executor:
# no pod installs kfp from an index.
STEP_BOOTSTRAP = '''\
import json, os, shutil, subprocess, sys, tarfile, tempfile, time
started = time.time()
plan, argv = json.loads(sys.argv[1]), sys.argv[2:]
spec = json.loads(argv[argv.index("--executor_input") + 1])
inputs = spec["inputs"]["artifacts"]

def local(name):
    uri = inputs[name]["artifacts"][0]["uri"]
    for prefix, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(prefix):
            return mount + uri[len(prefix):]
    return uri

folder = local("kale_environment")
archives = {{n[:-4]: os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".tar")}}
archives.update((n[len("{prefix}"):], local(n)) for n in inputs if n.startswith("{prefix}"))
found = [a for a in plan["unpack"] if a in archives]
# the archives of the step's own imports (numpy...) unpack in the background while kfp's executor and kale-magic's
# runtime start, which need only the others; kale-magic waits for them before the step's code runs
later = [a for a in plan.get("later", ()) if a in found]
found = [a for a in found if a not in later]

def unpack(env, quiet=False):
    try:
        tars = [subprocess.Popen(["tar", "-xf", archives[a], "-C", env], stderr=subprocess.DEVNULL if quiet else None)
                for a in found]
        failed = [a for a, tar in zip(found, tars) if tar.wait()]
    except FileNotFoundError:  # no tar in the image
        failed = found
    for archive in failed:
        with tarfile.open(archives[archive]) as tar:
            tar.extractall(env)

def memory_limit():  # the container's memory limit (cgroup v2, else v1), which the volume's files count against
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                text = limit.read().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) < 1 << 60 else None  # "max", v1's "unlimited"
    return None

where, memory = "on disk" + (f" ({{plan['disk']}})" if plan.get("disk") else ""), plan.get("memory")
if memory and not os.access(memory, os.W_OK):  # no volume there: a server or runner without emptyDir mounts
    where, memory = "on disk (no memory volume at " + memory + ")", ""
limit = memory_limit() if memory else None  # e.g. a namespace's LimitRange default, which the compile cannot see
if limit and 2 * plan.get("size", 0) > limit:
    where, memory = (f"on disk (the pod's memory limit, {{limit >> 20}} MiB, cannot hold its "
                     f"{{plan['size'] >> 20}} MiB and as much again for its code)"), ""
if memory:
    env = tempfile.mkdtemp(prefix="kale-environment-", dir=memory)
    try:
        unpack(env, quiet=True)
        where = "in memory"
    except OSError:  # the volume is fuller than the compile estimated (another platform's wheels)
        shutil.rmtree(env, ignore_errors=True)
        memory, where = "", "on disk (more than the memory volume holds)"
if not memory:
    env = tempfile.mkdtemp(prefix="kale-environment-")
    unpack(env)
pending = {{}}
for archive in later:  # marked done or failed when its tar ends; in the environment's folder: moved by a rename
    staged = pending[archive] = os.path.join(env, ".kale-later-" + archive)
    os.mkdir(staged)
    try:
        subprocess.Popen(["sh", "-c", 'tar -xf "$1" -C "$2" 2>/dev/null && : > "$2.done" || : > "$2.failed"',
                          "sh", archives[archive], staged])
    except OSError:  # no sh: the import hook unpacks it when it is imported
        os.rmdir(pending.pop(archive))
print(f"kale-magic: received {{len(archives)}} archives of the environment"
      + (f" (all: {{plan['whole']}})" if plan["whole"] else "")
      + f", unpacked {{len(found)}} {{where}} in {{time.time() - started:.2f}} s: {{' '.join(found)}}"
      + (f"; {{' '.join(pending)}} in the background" if pending else ""),
      file=sys.stderr, flush=True)  # the step's log says what its start-up cost
os.environ.update(KALE_ENVIRONMENT=env, KALE_ARCHIVES=json.dumps(archives), KALE_PENDING=json.dumps(pending),
                  KALE_INDEX=os.path.join(folder, "modules.json"), KALE_UNPACKED=json.dumps(found))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [env, os.environ.get("PYTHONPATH")]))
os.execvp(argv[0], argv)
'''.format(prefix=ARCHIVE_INPUT)


def archive_input(archive: str) -> str:
    """The environment task's output (and a step's input) holding the archive ``archive``."""
    return ARCHIVE_INPUT + archive


def archive_name(distribution: str) -> str:
    """The environment's archive of ``distribution`` (as the environment task names it: PEP 503, with ``_``)."""
    import re

    return re.sub(r"[-_.]+", "_", distribution).lower()


def kernel_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def pack_bundle(files: dict[str, bytes]) -> bytes:
    """``files`` (path -> content) as one xz-compressed tar with fixed metadata: equal files, equal bytes."""
    return _packed(tuple(sorted(files.items())))


@functools.lru_cache(maxsize=8)  # compressing the 1 MB wheel takes ~0.5 s, and every compile of a kernel packs it again
def _packed(files: tuple[tuple[str, bytes], ...]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return lzma.compress(buffer.getvalue(), preset=6)


def environment_source(function: str, image: str, requirements: list[str], runtime: str, wheel: str,
                       bundle: bytes, pip_options: list[str], archives=()) -> str:
    """The environment task's component function, with what it installs and carries written into it.

    ``runtime``: the ``kale-magic==<version>`` line to install from ``wheel`` (empty: the image has it);
    ``bundle``: the runtime bundle the task takes as its ``kale_runtime`` input (empty: it has none);
    ``archives``: the distributions packed as outputs of their own (the others go in ``environment``).
    """
    return ENVIRONMENT_SOURCE.format(
        function=function, python=kernel_python(), image=image, requirements=list(requirements),
        runtime=runtime, wheel=wheel, pip_options=list(pip_options), notebooks=NOTEBOOKS,
        archive_outputs="".join(f", {archive_input(a)}: Output[Artifact]" for a in archives),
        archive_paths="{" + ", ".join(f"{a!r}: {archive_input(a)}.path" for a in archives) + "}",
        runtime_input=f"{RUNTIME}: Input[Artifact], " if bundle else "", runtime_name=RUNTIME,
        digest=hashlib.sha256(bundle).hexdigest() if bundle else "")


def pip_index_options(index_urls) -> list[str]:
    """pip's options for ``Kfp.pip_index_urls``: the first is the index, the others extra indexes;
    plain-http indexes are trusted hosts (as kfp does for its own install)."""
    from urllib.parse import urlsplit

    options = []
    for i, url in enumerate(index_urls):
        options += ["--index-url" if i == 0 else "--extra-index-url", url]
        if url.startswith("http://"):
            options += ["--trusted-host", urlsplit(url).hostname]
    return options

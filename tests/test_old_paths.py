"""Module paths written into things that outlive a release keep working after the package was layered.

Step notebooks import ``kale_magic.runtime``, compiled YAML imports ``kale_magic.kfp_step``, running
kernels start ``python -m kale_magic.engines.workers`` and the console script is ``kale_magic.cli:main``.
"""

import json
import subprocess
import sys
from pathlib import Path

from test_kfp_containers import NOTEBOOK, compile_for_test, kfp_local, outputs, recorded_plan  # noqa: F401

from kale_magic import marshal

ROOT = Path(__file__).parents[1]
OLD_IMPORTS = {"kale_magic.engines.kfp.component": "kale_magic.kfp_step",
               "from kale_magic.step import runtime": "from kale_magic import runtime"}


def test_old_modules_export_what_generated_code_calls():
    from kale_magic import kfp_step, runtime
    from kale_magic.cli import main
    from kale_magic.engines import workers
    from kale_magic.engines.kfp.component import run_component
    from kale_magic.step import runtime as step_runtime

    assert runtime.load_inputs is step_runtime.load_inputs
    assert {"save_outputs", "log_metrics", "StepContext"} <= set(vars(runtime))
    assert kfp_step.run_component is run_component
    assert callable(workers.serve) and callable(main)


def test_the_old_worker_module_serves_and_exits_when_its_engine_goes():
    process = subprocess.run([sys.executable, "-m", "kale_magic.engines.workers", "json"], input=b"",
                             capture_output=True, cwd=ROOT, timeout=60)
    assert process.returncode == 0, process.stderr.decode()


def test_the_console_script_entry_point_answers():
    process = subprocess.run([sys.executable, "-c", "import sys; from kale_magic.cli import main; "
                              "sys.exit(main(['--help']))"], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0 and "kale-magic" in process.stdout


def test_yaml_compiled_with_the_old_paths_still_runs(kernel, kfp_local, tmp_path):  # noqa: F811
    from kfp import components

    plan = recorded_plan(kernel)
    text = compile_for_test(plan, tmp_path / "new.yaml").read_text()
    for new, old in OLD_IMPORTS.items():
        assert new in text
        text = text.replace(new, old)
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(text)
    components.load_component_from_file(str(old_yaml))()
    model = marshal.load(outputs(kfp_local, "train", "model"))
    assert json.dumps(model, default=list) == json.dumps(kernel.ns["model"], default=list)

"""Compile time of a 100-step plan vs the kfp SDK compiling plain lightweight pipelines.

Goal (DESIGN.md): a 100-step notebook compiles in < 1.5 s warm.  Baselines,
measured in the same process: kfp compiling a 100-task and a 200-task pipeline
of ordinary ``@dsl.component`` functions (one artifact passed along a chain).

    python benchmarks/bench_compile.py [--steps 100] [--repeat 5]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from kale_magic.engines.kfp.compiler import compile_pipeline  # noqa: E402
from kale_magic.plan.model import Plan, StepPlan, Transfer  # noqa: E402

GOAL = 1.5


def chain_plan(n: int) -> Plan:
    """``n`` steps, each loading the previous step's value and saving its own, plus a parameter."""
    steps = {}
    for i in range(n):
        inputs = (Transfer(f"v{i - 1}", f"step_{i - 1}", "pickle", "builtins.int"),) if i else ()
        code = f"v{i} = v{i - 1} + k" if i else "v0 = k"
        steps[f"step_{i}"] = StepPlan(f"step_{i}", (code,), (f"step_{i - 1}",) if i else (), ("k",), inputs,
                                      (Transfer(f"v{i}", f"step_{i}", "pickle", "builtins.int"),), ())
    return Plan("bench", steps, imports=("import math",), parameters={"k": 1})


def kfp_chain(n: int):
    """The same shape with hand-written lightweight components, compiled by kfp alone."""
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def first(k: int, out: Output[Dataset]):
        open(out.path, "w").write(str(k))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def step(k: int, src: Input[Dataset], out: Output[Dataset]):
        open(out.path, "w").write(str(int(open(src.path).read()) + k))

    @dsl.pipeline(name="baseline")
    def pipeline(k: int = 1):
        task = first(k=k)
        for _ in range(n - 1):
            task = step(k=k, src=task.outputs["out"])

    return pipeline


def timed(func, repeat: int) -> float:
    func()  # warm: imports, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from kfp import compiler

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plan = chain_plan(args.steps)
        ours = timed(lambda: compile_pipeline(plan, out / "kale.yaml"), args.repeat)
        baselines = {n: timed(lambda n=n: compiler.Compiler().compile(kfp_chain(n), str(out / f"kfp{n}.yaml")),
                              args.repeat) for n in (args.steps, 2 * args.steps)}
        size = (out / "kale.yaml").stat().st_size
    print(f"kale-magic compile, {args.steps} steps (warm, median of {args.repeat}): {ours:.3f} s "
          f"[goal < {GOAL} s] ({size / 1e6:.1f} MB YAML)")
    for n, seconds in baselines.items():
        print(f"kfp compile of {n} plain lightweight tasks (same run):     {seconds:.3f} s "
              f"-> ratio {ours / seconds:.2f}x")
    return 0 if ours < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())

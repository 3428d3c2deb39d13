"""``--foreach VAR in NAME``: the same meaning in the kernel and on the local engine (issue 24, points 1, 3, 7)."""

import pytest

from oracle import check, run_cells

KFOLD = [
    "%%imports\nimport numpy as np",
    "%%parameters\nn_folds = 5\nthreshold = 0.5",
    "%%step split\nX = np.random.default_rng(0).normal(size=(60, 3))\ny = X @ [1.0, -2.0, 0.5] + "
    "np.sin(np.arange(60.0)) / 10\nfolds = [np.arange(60)[i::n_folds] for i in range(n_folds)]",
    "%%step train --foreach fold in folds\nmask = np.ones(len(y), bool)\nmask[fold] = False\n"
    "model = np.linalg.lstsq(X[mask], y[mask], rcond=None)[0]\n"
    "score = float(1 - np.mean((X[fold] @ model - y[fold]) ** 2) / np.var(y[fold]))",
    "%%step check --foreach fold in folds\ncalibrated = model * (1 + 0.01 * len(fold))",
    "%%step summary\naccuracy = float(np.mean(score))\nbest = int(np.argmax(score))\nweights = np.stack(calibrated)",
]

FILES = [
    "%%imports\nimport glob\nimport json",
    "%%step find\nfiles = sorted(glob.glob('data/part-*.json'))",
    "%%step parse --foreach path in files\nwith open(path) as f:\n    rows = json.load(f)\ncount = len(rows)\n"
    "total = sum(r['v'] for r in rows)",
    "%%step report\nsizes = dict(zip(files, count))\ngrand = sum(total)",
]

NESTED = [
    "%%step make\ngroups = {'a': {'x': [1, 2], 'w': 0.5}, 'b': {'x': [3], 'w': 2.0}, 'c': {'x': [], 'w': 1.0}}",
    "%%step per --foreach key in groups\nscaled = [v * groups[key]['w'] for v in groups[key]['x']]\n"
    "size = len(scaled)",
    "%%step again --foreach key in groups\npair = (key, size, sum(scaled))",
    "%%step join\nflat = [v for part in scaled for v in part]\nby_key = {k: s for k, s, _ in pair}",
]

PARAMETER = [
    "%%parameters\nalphas = [0.1, 1.0, 10.0]",
    "%%step fit --foreach alpha in alphas\npenalty = alpha ** 2",
    "%%step pick\nlowest = min(penalty)",
]


def _files(root):
    import json

    (root / "data").mkdir(exist_ok=True)
    for i in range(4):
        (root / f"data/part-{i}.json").write_text(json.dumps([{"v": i * 10 + j} for j in range(i + 1)]))


@pytest.mark.parametrize("cells", [KFOLD, FILES, NESTED, PARAMETER], ids=["k-fold", "files", "nested", "parameter"])
def test_every_value_a_foreach_run_saves_equals_the_kernels(kernel, tmp_path, cells):
    _files(tmp_path)
    after_step = run_cells(kernel, cells)
    run = kernel.shell.run_line_magic("kale_run", "")
    assert check(run, after_step) >= 2

"""Train the xgboost and lightgbm sample models, with the model server's own libraries.

Run as a script by the model server venv's Python (`.venv-mlserver/bin/python
mmesh/local/train_extras.py OUT_DIR`), where xgboost and lightgbm live when
MMESH_MLSERVER_EXTRAS=1 installed them; it imports nothing from mmesh. Prints, as JSON, the files
it wrote per model format; a library that is not installed is left out.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any


def _digits() -> tuple[Any, Any]:
    from sklearn import datasets

    digits = datasets.load_digits()
    half = len(digits.data) // 2
    return digits.data[:half], digits.target[:half]


def train_xgboost(out: Path) -> Path:
    import xgboost  # type: ignore[import-not-found, unused-ignore]

    data, target = _digits()
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=4)
    model.fit(data, target)
    path = out / "mnist-xgb.json"
    model.save_model(str(path))
    return path


def train_lightgbm(out: Path) -> Path:
    import lightgbm  # type: ignore[import-not-found, unused-ignore]

    data, target = _digits()
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1)
    model.fit(data, target)
    path = out / "mnist-lgbm.bst"
    model.booster_.save_model(str(path))
    return path


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, train in (("xgboost", train_xgboost), ("lightgbm", train_lightgbm)):
        if importlib.util.find_spec(name) is not None:
            written[name] = str(train(out))
    print(json.dumps(written))


if __name__ == "__main__":
    main()

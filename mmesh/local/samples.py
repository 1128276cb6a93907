"""Sample models for the quickstart and the tests, made from data scikit-learn ships."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# The tutorial's request: row 898 of scikit-learn's digits, an 8.
TUTORIAL_DIGIT = [
    0.0, 0.0, 1.0, 11.0, 14.0, 15.0, 3.0, 0.0, 0.0, 1.0, 13.0, 16.0, 12.0, 16.0, 8.0, 0.0,
    0.0, 8.0, 16.0, 4.0, 6.0, 16.0, 5.0, 0.0, 0.0, 5.0, 15.0, 11.0, 13.0, 14.0, 0.0, 0.0,
    0.0, 0.0, 2.0, 12.0, 16.0, 13.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0, 16.0, 16.0, 6.0, 0.0,
    0.0, 0.0, 0.0, 16.0, 16.0, 16.0, 7.0, 0.0, 0.0, 0.0, 0.0, 11.0, 13.0, 12.0, 1.0, 0.0,
]  # fmt: skip

TUTORIAL_BUCKET = "modelmesh-example-models"
TUTORIAL_MODEL_KEY = "sklearn/mnist-svm.joblib"
EXTRA_MODEL_KEYS = {"xgboost": "xgboost/mnist-xgb.json", "lightgbm": "lightgbm/mnist-lgbm.bst"}
"""Where the optional xgboost and lightgbm samples go, when the model server venv has them."""


def train_mnist_svm(path: Path) -> Path:
    """The tutorial's sklearn/mnist-svm.joblib: an SVC on the first half of the digits."""
    import joblib
    from sklearn import datasets, svm

    digits = datasets.load_digits()
    half = len(digits.data) // 2
    model = svm.SVC(gamma=0.001)
    model.fit(digits.data[:half], digits.target[:half])
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path


def train_extras(model_server_python: Path, workdir: Path) -> dict[str, Path]:
    """The xgboost and lightgbm samples, trained by the model server's Python (the only one
    that has those libraries); empty when it has neither or does not exist."""
    if not model_server_python.exists():
        return {}
    script = Path(__file__).with_name("train_extras.py")
    done = subprocess.run(
        [str(model_server_python), str(script), str(workdir / "extras")],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    written = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: Path(path) for name, path in written.items()}


def upload_samples(
    endpoint_url: str, workdir: Path, model_server_python: Path | None = None
) -> list[str]:
    """Create the quickstart bucket on an S3 endpoint and put the sample models in it; the
    keys uploaded."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id="quickstart",
        aws_secret_access_key="quickstart",
        region_name="us-east-1",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if TUTORIAL_BUCKET not in existing:
        s3.create_bucket(Bucket=TUTORIAL_BUCKET)
    model = train_mnist_svm(workdir / "mnist-svm.joblib")
    s3.upload_file(str(model), TUTORIAL_BUCKET, TUTORIAL_MODEL_KEY)
    keys = [TUTORIAL_MODEL_KEY]
    extras = train_extras(model_server_python, workdir) if model_server_python else {}
    for name, path in extras.items():
        s3.upload_file(str(path), TUTORIAL_BUCKET, EXTRA_MODEL_KEYS[name])
        keys.append(EXTRA_MODEL_KEYS[name])
    return keys


if __name__ == "__main__":
    import sys

    upload_samples(sys.argv[1], Path(sys.argv[2]))

"""Sample models for the quickstart and the tests, made from data scikit-learn ships."""

from __future__ import annotations

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


def upload_samples(endpoint_url: str, workdir: Path) -> None:
    """Create the quickstart bucket on an S3 endpoint and put the sample models in it."""
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


if __name__ == "__main__":
    import sys

    upload_samples(sys.argv[1], Path(sys.argv[2]))

pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.s3",
    "tests.fixtures.mlserver",
    "tests.fixtures.runtimes",
    "tests.fixtures.router",
    "tests.fixtures.models",
    "tests.fixtures.kube",
    "tests.fixtures.cluster",
    "tests.fixtures.fake_ovms",
    "tests.fixtures.fake_torchserve",
]

"""Pure: the model-pulling sidecar of a runtime pod, as two Deployment pipeline steps.

`with_adapter` adds `<serverType>-adapter` (mmesh's adapter) for a built-in server type;
`with_puller` adds the `puller` for a custom runtime that keeps its storage helper. Their
environment is the contract mmesh/adapter/settings.py reads. Callers: deployment.py.
"""

from __future__ import annotations

import copy

from mmesh.core.numbers import whole_number
from mmesh.operator.errors import InvalidRuntime
from mmesh.operator.pod_parts import (
    LOCKED_DOWN,
    TMP_VOLUME,
    Manifest,
    PodContext,
    adapter_port,
    data_endpoint_text,
    data_port,
    dedupe_env,
    env_var,
    image_fields,
    management_endpoint_text,
    pod_of,
    prestop_wait,
    shared_mounts,
)
from mmesh.operator.podlayout import (
    ADAPTER_SUFFIX,
    MODELS_DIR,
    MODELS_VOLUME,
    PULLER_CONTAINER,
    PULLER_PORT,
    PVC_MOUNTS_DIR,
    STORAGE_CONFIG_DIR,
    STORAGE_CONFIG_VOLUME,
)
from mmesh.operator.resources import (
    MAX_LOADING_CONCURRENCY_ANNOTATION,
    PER_MODEL_CONCURRENCY_ANNOTATION,
    BuiltInAdapter,
    ServingRuntime,
)


def with_adapter(deployment: Manifest, ctx: PodContext) -> Manifest:
    """`<serverType>-adapter`: pulls models and drives the model server's repository API."""
    adapter = ctx.adapter
    if adapter is None:
        return deployment
    env = _adapter_env(ctx, adapter) + [dict(e) for e in adapter.env]
    container = _helper_container(ctx, adapter.server_type + ADAPTER_SUFFIX, dedupe_env(env))
    pod_of(deployment)["spec"]["containers"].append(container)
    return deployment


def _adapter_env(ctx: PodContext, adapter: BuiltInAdapter) -> list[Manifest]:
    runtime = ctx.runtime
    env = [
        env_var("ADAPTER_SERVER_TYPE", adapter.server_type),
        env_var("ADAPTER_PORT", adapter_port(runtime)),
        env_var("RUNTIME_PORT", adapter.runtime_management_port or data_port(runtime)),
    ]
    if runtime.grpc_data_endpoint is not None:
        env.append(env_var("RUNTIME_DATA_ENDPOINT", data_endpoint_text(runtime)))
    env.append(_container_memory_request(adapter.server_type))
    if adapter.mem_buffer_bytes is not None:
        env.append(env_var("MEM_BUFFER_BYTES", adapter.mem_buffer_bytes))
    if adapter.model_loading_timeout_millis is not None:
        env.append(env_var("LOADTIME_TIMEOUT", adapter.model_loading_timeout_millis))
    env.append(env_var("USE_EMBEDDED_PULLER", "true"))
    env.extend(_storage_env())
    env.extend(_concurrency_env(runtime))
    version = _image_tag(runtime, adapter.server_type)
    if version:
        env.append(env_var("RUNTIME_VERSION", version))
    return env


def _container_memory_request(container: str) -> Manifest:
    # Capacity = the model server's memory request minus a buffer; the downward API keeps
    # it in step with the spec without the operator parsing quantities.
    ref = {"containerName": container, "resource": "requests.memory"}
    return {"name": "CONTAINER_MEM_REQ_BYTES", "valueFrom": {"resourceFieldRef": ref}}


def _storage_env() -> list[Manifest]:
    return [
        env_var("ROOT_MODEL_DIR", MODELS_DIR),
        env_var("STORAGE_CONFIG_DIR", STORAGE_CONFIG_DIR),
        env_var("PVC_MOUNTS_DIR", PVC_MOUNTS_DIR),
    ]


def _concurrency_env(runtime: ServingRuntime) -> list[Manifest]:
    env = []
    names = (
        (MAX_LOADING_CONCURRENCY_ANNOTATION, "LOADING_CONCURRENCY"),
        (PER_MODEL_CONCURRENCY_ANNOTATION, "LIMIT_PER_MODEL_CONCURRENCY"),
    )
    for annotation, var in names:
        raw = runtime.meta.annotations.get(annotation)
        if raw is None:
            continue
        value = whole_number(raw.strip())
        if value is None:
            raise InvalidRuntime(runtime.name, f"annotation {annotation} must be an integer")
        env.append(env_var(var, value))
    return env


def _image_tag(runtime: ServingRuntime, container_name: str) -> str:
    for container in runtime.containers:
        if container["name"] == container_name:
            image = str(container.get("image") or "")
            last = image.rsplit("/", 1)[-1]
            return last.split("@", 1)[0].partition(":")[2]
    return ""


def with_puller(deployment: Manifest, ctx: PodContext) -> Manifest:
    """`puller` sidecar: for custom runtimes, pulls models then forwards to grpcEndpoint."""
    if not ctx.uses_puller:
        return deployment
    env = [
        env_var("ADAPTER_SERVER_TYPE", PULLER_CONTAINER),
        env_var("ADAPTER_PORT", PULLER_PORT),
        env_var("PORT", PULLER_PORT),
        env_var("MODEL_SERVER_ENDPOINT", management_endpoint_text(ctx.runtime)),
        *_storage_env(),
    ]
    container = _helper_container(ctx, PULLER_CONTAINER, env)
    container["ports"] = [{"name": "grpc-puller", "containerPort": PULLER_PORT}]
    pod_of(deployment)["spec"]["containers"].append(container)
    return deployment


def _helper_container(ctx: PodContext, name: str, env: list[Manifest]) -> Manifest:
    image = ctx.config.storage_helper_image
    mounts = [
        {"name": MODELS_VOLUME, "mountPath": MODELS_DIR},
        {"name": STORAGE_CONFIG_VOLUME, "mountPath": STORAGE_CONFIG_DIR, "readOnly": True},
        *shared_mounts(ctx),
    ]
    mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
    container: Manifest = {"name": name, **image_fields(image), "env": env}
    container["resources"] = ctx.config.storage_helper_resources.to_manifest()
    container["volumeMounts"] = mounts
    container["securityContext"] = copy.deepcopy(LOCKED_DOWN)
    container["lifecycle"] = prestop_wait()
    return container

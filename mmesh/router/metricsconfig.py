"""Pure: MM_METRICS, parsed:
`prometheus:port=2112;scheme=https;fq_names=true;per_model_metrics=true` or `disabled`, with
the reference's parameter names and defaults (short method names, no
per-model labels). StatsD (the reference's default when unset) is not offered: an unknown
kind is an error that names the value, so a typo does not silently turn metrics off."""

from __future__ import annotations

from dataclasses import dataclass

from mmesh.core.numbers import whole_number


class BadMetricsConfig(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    port: int = 2112
    https: bool = False
    fq_names: bool = False
    """Method labels as `package.Service/Method` instead of `Method`."""
    per_model: bool = False
    """`modelId` and `vModelId` labels on the request metrics (one series per model)."""

    def method_label(self, method: str) -> str:
        """`/inference.GRPCInferenceService/ModelInfer` -> `ModelInfer`, or the full name
        without the leading slash with fq_names."""
        name = method.lstrip("/")
        return name if self.fq_names else name.rpartition("/")[2]


def _flag(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise BadMetricsConfig(f"MM_METRICS: {key} must be true or false, got {value!r}")


def parse_metrics(raw: str) -> MetricsConfig:
    text = raw.strip()
    if text in ("", "disabled"):
        return MetricsConfig(enabled=False)
    kind, _, params = text.partition(":")
    if kind.strip() != "prometheus":
        raise BadMetricsConfig(
            f"MM_METRICS: {kind.strip()!r} is not supported; use 'prometheus:...' or 'disabled'"
        )
    values: dict[str, str] = {}
    for part in params.split(";"):
        key, _, value = (x.strip() for x in part.partition("="))
        if key:
            values[key] = value  # other reference keys (mem_detail, ...) are ignored
    port = values.get("port", "2112")
    number = whole_number(port)
    if number is None or not 0 < number < 65536:
        raise BadMetricsConfig(f"MM_METRICS: port must be 1-65535, got {port!r}")
    scheme = values.get("scheme", "http")
    if scheme not in ("http", "https"):
        raise BadMetricsConfig(f"MM_METRICS: scheme must be http or https, got {scheme!r}")
    return MetricsConfig(
        enabled=True,
        port=number,
        https=scheme == "https",
        fq_names=_flag("fq_names", values.get("fq_names", "false")),
        per_model=_flag("per_model_metrics", values.get("per_model_metrics", "false")),
    )

"""This process' Prometheus samples, read from the default registry, for metric tests."""

from __future__ import annotations

from prometheus_client import REGISTRY


def registry_samples(prefix: str) -> dict[str, float]:
    """Samples whose names start with `prefix`, as `name{label="value",...}` -> value (no
    `_created`)."""
    values: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def moved_since(prefix: str, before: dict[str, float]) -> dict[str, float]:
    """The counters (`_total`) and histogram counts (`_count`) under `prefix` that moved since
    `before` (a `registry_samples(prefix)`)."""
    after = registry_samples(prefix)
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key.split("{")[0].endswith(("_total", "_count")) and after[key] != before.get(key, 0.0)
    }

"""Reading metrics the way Prometheus does: render a registry (or scrape a URL) and parse the text."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition text: (sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rendered(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; KeyError (listing what there is) when it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        similar = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise KeyError(f"no {name}{labels}; {name} has {similar}")
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (sample, found), v in samples.items() if sample == name and wanted <= found)

"""Settings every test shares.

Hypothesis's default 200 ms deadline per example measures the machine, not the code: on a shared
2-core runner, with servers of other tests busy, any example can take longer and fail with
DeadlineExceeded although nothing is wrong. Properties here are about results, never speed
(DESIGN.md: performance is measured with the benchmark), so the deadline is off; the number of
examples stays bounded by each test's own settings.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("pegasus-kv", deadline=None)
settings.load_profile("pegasus-kv")

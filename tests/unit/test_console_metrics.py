"""GET /v1/jobs/{id}/metrics: thinning of long metric histories (pure)."""
from trainyard.api.routes.job_metrics import thin


def test_short_histories_are_whole():
    points = [[i, float(i), 0] for i in range(10)]
    assert thin(points, most=10) == points


def test_long_histories_are_thinned_keeping_first_and_last():
    points = [[i, float(i), 0] for i in range(10_001)]
    out = thin(points, most=100)
    assert len(out) == 100 and out[0] == points[0] and out[-1] == points[-1]
    assert [p[0] for p in out] == sorted(p[0] for p in out)

"""Request batching (trainyard.serving.batching): stacked requests answer exactly what each
request answers alone, for every family that batches. Real models, no Ray."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trainyard.errors import SpecError  # noqa: E402
from trainyard.families import registered, static_meta  # noqa: E402
from trainyard.serving.batching import adapter_of, chunks, predict_batch  # noqa: E402
from trainyard.serving.config import family_batches  # noqa: E402
from trainyard.specs import parse_endpoint_spec  # noqa: E402
from trainyard.workload import BatchAdapter, Workload, resolve_workload  # noqa: E402


class Loaded:
    """What a Serve replica holds for one version (app.LoadedVersion), without MLflow."""

    def __init__(self, family: str, hparams: dict | None = None, seed: int = 0):
        self.workload = resolve_workload(family)
        self.hparams = dict(hparams or {})
        torch.manual_seed(seed)
        self.models = self.workload.build_models(self.hparams)
        for m in self.models.values():
            m.eval()
        self.adapter = adapter_of(self.workload)

    def predict(self, payload):
        return self.workload.predictor(self.models, payload, self.hparams)


def _digits(n: int, offset: int = 0):
    from sklearn.datasets import load_digits

    return load_digits().images[offset:offset + n].tolist()


def _image_payloads():
    return [{"inputs": _digits(1)[0]},  # one 8x8 image, not a list of them
            {"inputs": _digits(3, 5)},
            {"inputs": [[v / 16.0 for row in img for v in row] for img in _digits(2, 20)], "scale": 1.0},
            {"inputs": _digits(4, 40)}]


def _series_payloads(window: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return [{"inputs": rng.normal(size=window).tolist()},  # one series
            {"inputs": rng.normal(size=(3, window + 5)).tolist()},  # longer: the last `window` count
            {"inputs": rng.normal(size=(2, window)).tolist()}]


def _close(a, b):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=2e-4)
    else:
        assert a == b


@pytest.mark.parametrize("family,hparams,payloads", [
    ("cnn", {"channels": 4, "hidden": 8}, _image_payloads()),
    ("rnn", {"hidden": 16}, _image_payloads()),
    ("rnn-forecast", {"hidden": 16, "window": 24, "horizon": 4}, _series_payloads(24)),
    ("autoencoder", {}, _image_payloads()),
])
def test_batched_and_unbatched_predictions_agree(family, hparams, payloads):
    loaded = Loaded(family, hparams)
    alone = [loaded.predict(p) for p in payloads]
    requests = [(loaded, loaded.adapter.items(p, loaded.hparams)) for p in payloads]
    assert all(items is not None for _, items in requests)
    batched = predict_batch(requests)
    assert len(batched) == len(payloads)
    for one, many in zip(alone, batched):
        assert not isinstance(many, Exception), many
        assert set(one) == set(many)
        for key in one:
            _close(one[key], many[key])


def test_every_family_that_batches_by_default_has_an_adapter():
    spec = parse_endpoint_spec({"model": "m"})
    batching = {name for name in registered() if family_batches(name, spec)}
    assert batching == {"cnn", "rnn", "rnn-forecast", "autoencoder"}
    for name in registered():  # the static metadata the server reads says what the code does
        assert static_meta(name).batches == (resolve_workload(name).batch is not None), name


def test_a_users_own_family_batches_through_the_contract_alone():
    """No table keyed by family name: any Workload with a `batch` adapter is batched."""
    import numpy as np

    def predictor(models, payload, hparams):
        return {"doubled": (np.asarray(payload["inputs"]) * hparams["k"]).tolist()}

    calls = []

    def merge(arrays, hparams):
        calls.append(len(arrays))
        return {"inputs": np.concatenate(arrays)}

    own = Workload(name="doubler", build_models=dict, build_datasets=tuple, evaluate=dict, predictor=predictor,
                   metric="m", mode="max", metrics=("m",),
                   batch=BatchAdapter(lambda p, h: np.asarray(p["inputs"]), merge, max_items=3))

    class Own:
        workload, hparams, models = own, {"k": 2}, {}
        adapter = adapter_of(own)

        def predict(self, payload):
            return own.predictor(self.models, payload, self.hparams)

    one = Own()
    payloads = [{"inputs": [1, 2]}, {"inputs": [3]}, {"inputs": [4, 5]}]
    got = predict_batch([(one, one.adapter.items(p, one.hparams)) for p in payloads])
    assert got == [{"doubled": [2, 4]}, {"doubled": [6]}, {"doubled": [8, 10]}]
    assert calls == [2, 1]  # chunks of at most max_items=3 items: [2 + 1], [2]


def test_two_versions_in_one_batch_are_not_mixed():
    a, b = Loaded("cnn", {"channels": 4, "hidden": 8}, seed=1), Loaded("cnn", {"channels": 4, "hidden": 8}, seed=2)
    payloads = _image_payloads()
    requests = [(a if i % 2 else b, None) for i in range(len(payloads))]
    requests = [(m, m.adapter.items(p, m.hparams)) for (m, _), p in zip(requests, payloads)]
    for (m, _), p, got in zip(requests, payloads, predict_batch(requests)):
        _close(m.predict(p)["probabilities"], got["probabilities"])


def test_requests_that_cannot_stack_run_alone():
    ae = Loaded("autoencoder")
    assert ae.adapter.items({"n": 4}, ae.hparams) is None  # sampling
    assert ae.adapter.items({"inputs": _digits(2), "png": True}, ae.hparams) is None  # a grid of its own images
    fc = Loaded("rnn-forecast", {"hidden": 8, "window": 24, "horizon": 4})
    assert fc.adapter.items({"inputs": [1.0, 2.0, 3.0]}, fc.hparams) is None  # too short: the family says why


def test_a_malformed_request_is_its_own_422_not_the_batchs():
    rnn = Loaded("rnn", {"hidden": 8})
    with pytest.raises(SpecError) as err:
        rnn.adapter.items({"inputs": [[1, 2, 3]]}, rnn.hparams)
    assert err.value.field == "inputs"
    with pytest.raises(SpecError) as err:
        rnn.adapter.items({"inputs": _digits(1), "pixels": 1}, rnn.hparams)
    assert err.value.field == "pixels"


def test_a_batch_never_exceeds_the_familys_item_limit():
    assert chunks([0, 1, 2, 3], [100, 100, 100, 30], 256) == [[0, 1], [2, 3]]
    assert chunks([0, 1], [300, 1], 256) == [[0], [1]]  # one request alone may be its own chunk
    ae = Loaded("autoencoder")
    payload = {"inputs": _digits(1) * 200}
    got = predict_batch([(ae, ae.adapter.items(payload, ae.hparams)) for _ in range(3)])  # 600 items in all
    assert all(not isinstance(g, Exception) and len(g["reconstructions"]) == 200 for g in got)

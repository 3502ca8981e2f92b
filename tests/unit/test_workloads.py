"""Unit tests of the built-in families (no Ray, no DeepSpeed): a plain-torch engine twin
drives each family's train_step; evaluate, predictor and artifacts are checked directly.
Tiny hyperparameters keep each family to a few seconds on 2 shared cores."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trainyard.errors import SpecError  # noqa: E402
from trainyard.workload import StepContext, resolve_workload  # noqa: E402

from trainyard.testing import FakeEngine, engines_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("cnn", "rnn", "autoencoder", "gan", "diffusion", "transformer")

TINY = {
    "rnn": ({"hidden": 16}, {}),
    "rnn-forecast": ({"hidden": 16, "window": 16, "horizon": 4}, {}),
    "autoencoder": ({"hidden": 32, "latent": 2, "eval_samples": 64}, {}),
    "gan": ({"latent": 8, "g_width": 32, "d_width": 32, "eval_samples": 64}, {}),
    "diffusion": ({"channels": 8, "timesteps": 20, "sample_steps": 3, "eval_samples": 64}, {}),
    "transformer": ({"d_model": 32, "layers": 1, "heads": 2, "context": 16},
                    {"max_bytes": 20000, "val_chunks": 4}),
}


@pytest.fixture(scope="module", autouse=True)
def fid_cache(tmp_path_factory):
    """One digits-FID classifier for the whole module, in a private cache folder."""
    from workloads.common import fid

    folder = tmp_path_factory.mktemp("fid-cache")
    saved = fid._cache_dir
    fid._cache_dir = lambda: folder
    fid._net.cache_clear()
    fid._reference.cache_clear()
    fid.noise_fid.cache_clear()
    yield folder
    fid._cache_dir = saved


def _setup(name, seed=0):
    torch.manual_seed(seed)
    wl = resolve_workload(name)
    hparams, data = TINY[name]
    h = {**wl.default_hparams, **hparams}
    models = wl.build_models(h)
    train, test = wl.build_datasets(h, data)
    return wl, h, models, train, test


def _batch(ds, n=32):
    items = [ds[i] for i in range(n)]
    return tuple(torch.stack(col) for col in zip(*items))


def _losses(wl, h, models, batch, steps, lr, key="loss"):
    engines = engines_for(models, lr=lr)
    ctx = StepContext(hparams=h)
    out = []
    for i in range(steps):
        ctx.step = i
        out.append(wl.train_step(engines, batch, ctx)[key])
    return out, engines


# ------------------------------------------------------------------ the registry, torch-free


def test_registry_lists_all_families_without_torch():
    code = ("import sys, trainyard.workload as w;"
            "from trainyard.families import registered, static_meta;"
            "names = sorted(registered());"
            "metas = [static_meta(n).metric for n in names];"
            "fams = sorted(m for m in sys.modules if m.startswith('workloads'));"
            "wl = w.resolve_workload('gan');"
            "[w.resolve_workload(n) for n in names];"
            "import json; print(json.dumps({'names': names, 'torch': 'torch' in sys.modules,"
            " 'metric': wl.metric, 'imported_before_resolve': fams}))")
    env_path = f"{REPO / 'platform'}:{REPO}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(FAMILIES) <= set(info["names"])
    assert info["torch"] is False
    assert info["metric"] == "fid"
    assert info["imported_before_resolve"] == []  # listing and metadata import no family


@pytest.mark.parametrize("name", FAMILIES + ("rnn-forecast",))
def test_workload_declares_metric_and_search_space(name):
    wl = resolve_workload(name)
    assert wl.metric in wl.metrics and wl.mode in ("max", "min")
    assert wl.search_space, name
    for key, dist in wl.search_space.items():
        assert key.startswith(("training.", "hyperparameters.")), key
        (kind, values), = dist.items()
        assert kind in ("choice", "uniform", "loguniform", "randint"), key
        assert isinstance(values, list) and values
    assert wl.request_schema.get("type") == "object"
    assert wl.response_schema.get("type") == "object"


FAMILY_EXAMPLES = [REPO / "examples" / f"{name}.yaml" for name in FAMILIES + ("rnn-forecast",)]


@pytest.mark.parametrize("path", FAMILY_EXAMPLES, ids=lambda p: p.name)
def test_family_example_specs_parse(path):
    from trainyard.specs import parse_job_spec

    spec = parse_job_spec(path)
    wl = resolve_workload(spec.workload)
    assert spec.resources.workers == 2
    for key in spec.hyperparameters:
        assert key in wl.default_hparams, f"{path.name}: hyperparameters.{key} is not a {wl.name} hparam"


# ------------------------------------------------------------------ rnn


def test_rnn_classify_learns_and_predicts():
    wl, h, models, train, test = _setup("rnn")
    batch = _batch(train, 64)
    losses, _ = _losses(wl, h, models, batch, 30, 1e-2)
    assert sum(losses[-3:]) < sum(losses[:3])
    metrics = wl.evaluate(models, test, StepContext(hparams=h))
    assert 0.0 <= metrics["accuracy"] <= 1.0
    img = (test.tensors[0][:2] * 16).tolist()
    out = wl.predictor(models, {"inputs": img}, h)
    assert len(out["classes"]) == 2 and len(out["probabilities"][0]) == 10
    with pytest.raises(SpecError) as exc:
        wl.predictor(models, {"inputs": [[1, 2, 3]]}, h)
    assert exc.value.field == "inputs"


def test_rnn_gru_cell_and_bad_task():
    wl = resolve_workload("rnn")
    assert "GRU" in type(wl.build_models({"cell": "gru", "hidden": 8})["model"].rnn).__name__
    with pytest.raises(SpecError) as exc:
        wl.build_models({"task": "forecast"})
    assert exc.value.field == "hyperparameters.task" and "rnn-forecast" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        wl.build_models({"cell": "transformer"})
    assert exc.value.field == "hyperparameters.cell"


def test_rnn_forecast_learns_and_forecasts():
    wl, h, models, train, test = _setup("rnn-forecast")
    batch = _batch(train, 64)
    losses, _ = _losses(wl, h, models, batch, 30, 1e-2)
    assert sum(losses[-3:]) < sum(losses[:3])
    metrics = wl.evaluate(models, test, StepContext(hparams=h))
    assert metrics["mase"] > 0 and 0.8 < metrics["naive_mase"] < 1.3
    out = wl.predictor(models, {"inputs": [0.1 * i for i in range(16)]}, h)
    assert len(out["forecast"]) == 1 and len(out["forecast"][0]) == 4
    with pytest.raises(SpecError) as exc:
        wl.predictor(models, {"inputs": [1.0, 2.0]}, h)
    assert exc.value.field == "inputs" and "window=16" in str(exc.value)
    with pytest.raises(SpecError):
        wl.predictor(models, {"inputs": "abc"}, h)


# ------------------------------------------------------------------ autoencoder


def test_autoencoder_learns_evaluates_and_predicts(tmp_path):
    wl, h, models, train, test = _setup("autoencoder")
    losses, _ = _losses(wl, h, models, _batch(train, 64), 30, 3e-3)
    assert sum(losses[-3:]) < sum(losses[:3])
    ctx = StepContext(hparams=h)
    m1, m2 = wl.evaluate(models, test, ctx), wl.evaluate(models, test, ctx)
    assert m1 == m2, "evaluation must be deterministic (identical on every rank)"
    assert m1["elbo"] < 0 and m1["fid"] > 0 and m1["noise_fid"] > 0
    out = wl.predictor(models, {"inputs": (test.tensors[0][:3, 0] * 16).tolist(), "png": True}, h)
    assert torch.tensor(out["reconstructions"]).shape == (3, 8, 8) and out["png"]
    out = wl.predictor(models, {"n": 5}, h)
    assert torch.tensor(out["samples"]).shape == (5, 8, 8) and "png" not in out
    for bad, field in [({"n": 0}, "n"), ({"n": "3"}, "n"), ({}, "inputs"), ({"inputs": [[1]]}, "inputs"),
                       ({"n": 2, "pgn": True}, "pgn"), ({"n": 2, "png": "yes"}, "png")]:
        with pytest.raises(SpecError) as exc:
            wl.predictor(models, bad, h)
        assert exc.value.field == field, bad
    paths = wl.artifacts(models, test, ctx, str(tmp_path))
    assert len(paths) == 2 and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in paths)


# ------------------------------------------------------------------ gan


def test_gan_steps_both_engines_and_keeps_discriminator_grads_clean(tmp_path):
    wl, h, models, train, test = _setup("gan")
    assert set(models) == {"generator", "discriminator"}
    batch = _batch(train, 32)
    ctx = StepContext(hparams=h)
    engines = engines_for(models, lr=2e-3)
    d_losses = []
    for i in range(25):
        ctx.step = i
        out = wl.train_step(engines, batch, ctx)
        d_losses.append(out["loss_d"])
        assert set(out) >= {"loss", "loss_g", "loss_d"}
    assert engines["generator"].steps == 25 and engines["discriminator"].steps == 25
    # the generator's step must not leave gradients on the discriminator, nor freeze it
    assert all(p.grad is None and p.requires_grad for p in models["discriminator"].parameters())
    assert sum(d_losses[-3:]) < sum(d_losses[:3])
    m = wl.evaluate(models, test, ctx)
    assert m == wl.evaluate(models, test, ctx)
    assert m["fid"] > 0 and m["noise_fid"] > 0
    out = wl.predictor(models, {"n": 4, "png": True, "seed": 3}, h)
    assert torch.tensor(out["samples"]).shape == (4, 8, 8) and isinstance(out["png"], str)
    assert out["samples"] == wl.predictor(models, {"n": 4, "seed": 3}, h)["samples"]
    for bad in ({"n": 10_000}, {"n": -1}, {"samples": 3}, [1, 2]):
        with pytest.raises(SpecError):
            wl.predictor(models, bad, h)
    (path,) = wl.artifacts(models, test, ctx, str(tmp_path))
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ diffusion


def test_diffusion_learns_and_samples_with_steps(tmp_path):
    wl, h, models, train, test = _setup("diffusion")
    torch.manual_seed(0)
    losses, _ = _losses(wl, h, models, _batch(train, 64), 40, 3e-3)
    assert sum(losses[-8:]) < sum(losses[:8])
    ctx = StepContext(hparams=h)
    m = wl.evaluate(models, test, ctx)
    assert m == wl.evaluate(models, test, ctx)
    assert m["fid"] > 0 and m["eval_loss"] > 0
    for steps in (1, 5):
        out = wl.predictor(models, {"n": 3, "steps": steps}, h)
        arr = torch.tensor(out["samples"])
        assert arr.shape == (3, 8, 8) and 0 <= arr.min() and arr.max() <= 1
    with pytest.raises(SpecError) as exc:
        wl.predictor(models, {"n": 3, "steps": 21}, h)  # more than timesteps
    assert exc.value.field == "steps"
    with pytest.raises(SpecError) as exc:
        wl.predictor(models, {"n": 3, "eta": 2}, h)
    assert exc.value.field == "eta"
    with pytest.raises(SpecError) as exc:
        wl.build_models({"schedule": "sigmoid"})
    assert exc.value.field == "hyperparameters.schedule"
    (path,) = wl.artifacts(models, test, ctx, str(tmp_path))
    assert Path(path).stat().st_size > 0


def test_diffusion_schedules_are_monotone():
    from workloads.diffusion.model import alpha_bars

    for schedule in ("cosine", "linear"):
        ab = alpha_bars(schedule, 100)
        assert ab.shape == (100,) and (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < ab[0] < 1


# ------------------------------------------------------------------ transformer


def test_transformer_corpus_is_deterministic_and_split():
    from workloads.transformer.data import corpus

    train, val, info = corpus(20000)
    assert len(train) == 20000 and len(val) == 2000
    assert info["train_files"] > 0 and info["val_files"] > 0
    corpus.cache_clear()
    train2, val2, info2 = corpus(20000)
    assert info2["sha256"] == info["sha256"] and bytes(train2[:100]) == bytes(train[:100])


def test_transformer_learns_and_generates():
    wl, h, models, train, test = _setup("transformer")
    losses, _ = _losses(wl, h, models, _batch(train, 16), 30, 3e-3)
    assert sum(losses[-3:]) < sum(losses[:3])
    m = wl.evaluate(models, test, StepContext(hparams=h))
    assert 0 < m["bpb"] < 9
    out = wl.predictor(models, {"prompt": "import os\n", "max_tokens": 12, "temperature": 0.5}, h)
    assert isinstance(out["text"], str) and len(out["text"].encode("utf-8", "replace")) >= 1
    greedy = {"prompt": "def ", "max_tokens": 5, "temperature": 0}
    assert wl.predictor(models, greedy, h) == wl.predictor(models, greedy, h)
    for bad, field in [({"prompt": 3}, "prompt"), ({"max_tokens": 0}, "max_tokens"),
                       ({"temperature": -1}, "temperature"), ({"promt": "x"}, "promt")]:
        with pytest.raises(SpecError) as exc:
            wl.predictor(models, bad, h)
        assert exc.value.field == field


def test_fake_engine_is_a_faithful_minimal_engine():
    model = torch.nn.Linear(2, 1)
    eng = FakeEngine(model, lr=0.1)
    before = model.weight.detach().clone()
    loss = eng(torch.ones(4, 2)).pow(2).mean()
    eng.backward(loss)
    eng.step()
    assert not torch.equal(before, model.weight) and model.weight.grad is None


def test_gan_conv_arch_steps_and_bad_arch():
    wl = resolve_workload("gan")
    h = {**wl.default_hparams, "arch": "conv", "latent": 8, "g_width": 16, "d_width": 16}
    models = wl.build_models(h)
    train, _ = wl.build_datasets(h, {})
    losses, engines = _losses(wl, h, models, _batch(train, 16), 2, 1e-3, key="loss_d")
    assert engines["generator"].steps == engines["discriminator"].steps == 2
    with pytest.raises(SpecError) as exc:
        wl.build_models({"arch": "vit"})
    assert exc.value.field == "hyperparameters.arch"

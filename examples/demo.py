"""`make demo`: the whole path, from training to a live endpoint, on the local stack.

    1. start the local stack (`trainyard up`)
    2. train examples/cnn.yaml (progress bar; test accuracy and the MLflow run)
    3. run examples/demo-sweep.yaml: a small ASHA sweep; print its leaderboard
    4. the server promotes the sweep's winner (its `promote:` block): print each decision
    5. POST held-out test digits to the endpoint over HTTP; print label, prediction, probability
    6. stop the stack

Uses ./.trainyard-demo as the Trainyard home unless TRAINYARD_HOME is set. Stops what it
started, also on Ctrl-C or failure (and cancels a job or sweep it left running); a stack
that was already running before the demo is left running. Exits non-zero when a stage
fails or the job's test accuracy is below 0.95.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "cnn.yaml"
SWEEP_SPEC = REPO / "examples" / "demo-sweep.yaml"
MIN_ACCURACY = 0.95
NUM_DIGITS = 5
# the server's watcher looks for finished sweeps every 5 s; the first deploy of an endpoint
# (Serve's controller and proxy start, the model is fetched from MLflow) takes 10-60 s here
PROMOTION_TIMEOUT_S = 420.0
TERMINAL_EVENTS = ("promoted", "rejected", "rolled_back", "failed")


class StageFailed(Exception):
    """A stage ended badly; the message says how."""


def _sigterm(signum, frame):  # `kill` and CI timeouts clean up like Ctrl-C does
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------- pure helpers


def fmt_duration(seconds: float) -> str:
    """`7 s`, `1:05`, `12:40`: stage times that read at a glance."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def pick_digits(labels: Sequence[int], n: int = NUM_DIGITS) -> list[int]:
    """Indices of the first `n` examples with distinct labels (the first ones if too few)."""
    picked, seen = [], set()
    for i, label in enumerate(labels):
        if int(label) not in seen:
            seen.add(int(label))
            picked.append(i)
            if len(picked) == n:
                return picked
    rest = [i for i in range(len(labels)) if i not in picked]
    return (picked + rest)[:n]


def to_pixels(image: Any) -> list[list[int]]:
    """A (1, 8, 8) or (8, 8) image scaled to [0, 1] -> the 0..16 integer rows the endpoint takes."""
    import numpy as np

    arr = np.asarray(image, dtype=np.float64).reshape(8, 8)
    return np.rint(arr * 16.0).astype(int).tolist()


def prediction_row(index: int, label: int, answer: dict) -> tuple[int, int, int, float]:
    """(test index, label, predicted class, its probability) from a cnn predictor answer."""
    cls = int(answer["classes"][0])
    return index, int(label), cls, float(answer["probabilities"][0][cls])


def promotion_events(history: dict, candidate: str) -> list[dict]:
    """The events of the promotions of version `candidate`, oldest first."""
    return [e for e in history.get("events") or [] if str(e.get("candidate")) == str(candidate)]


def verdict(events: Sequence[dict]) -> dict | None:
    """The promotion's final event (promoted, rejected, rolled_back, failed), if it has one."""
    return next((e for e in events if e.get("kind") in TERMINAL_EVENTS), None)


# ----------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self):
        from trainyard.cli import _ui as ui

        self.ui = ui
        self.out = ui.stdout()
        self.t0 = time.monotonic()
        self.times: list[tuple[str, float, str]] = []  # (stage, seconds, outcome)
        self.client = None
        self.running: tuple[str, str] | None = None  # ("job" | "sweep", id): cancelled on Ctrl-C

    def stage(self, number: int, total: int, title: str):
        demo = self

        class _Stage:
            def __enter__(self):
                self.start = time.monotonic()
                load = os.getloadavg()[0]
                demo.out.rule(f"[bold]{number}/{total} {title}[/]  (t+{fmt_duration(self.start - demo.t0)}, "
                              f"load {load:.1f})", align="left")
                return self

            def __exit__(self, exc_type, exc, tb):
                took = time.monotonic() - self.start
                outcome = "ok" if exc_type is None else ("interrupted" if exc_type is KeyboardInterrupt else "failed")
                demo.times.append((title, took, outcome))
                demo.out.print(f"[dim]{title}: {outcome} in {fmt_duration(took)}[/]")
                return False

        return _Stage()

    # -- 1
    def start_stack(self) -> None:
        from trainyard.cli.main import build_parser, cmd_up
        from trainyard.local.processes import free_port, port_in_use
        from trainyard.sdk import Client

        # Serve's HTTP proxy takes 8000 by default; on a shared machine another Ray may hold it
        if not os.environ.get("TRAINYARD_SERVE_PORT") and port_in_use(8000):
            os.environ["TRAINYARD_SERVE_PORT"] = str(free_port())
            self.out.print(f"Serve's port 8000 is taken; endpoints will listen on {os.environ['TRAINYARD_SERVE_PORT']}")
        up_args = build_parser().parse_args(["up"])  # the same code path as `trainyard up`
        up_args.hint = False
        cmd_up(up_args)
        self.client = Client()

    # -- 2
    def train(self) -> float:
        from trainyard.cli.main import follow_job, job_metrics, print_outcome
        from trainyard.specs import load_yaml, parse_job_spec

        raw = load_yaml(SPEC.read_text(), source=str(SPEC))
        spec = parse_job_spec(raw, source=str(SPEC))
        submitted = self.client.submit_job(raw)
        job_id = str(self.ui.job_field(submitted, "id", "job_id"))
        self.running = ("job", job_id)
        self.out.print(f"Submitted {SPEC.relative_to(REPO)} as job [bold]{job_id}[/]")
        final = follow_job(self.client, job_id, spec.name)
        self.running = None
        print_outcome(self.client, final)
        state = str(self.ui.job_field(final, "state", "status", "phase"))
        accuracy = job_metrics(final).get("accuracy")
        if state != "SUCCEEDED":
            raise StageFailed(f"the demo job ended {state}")
        if accuracy is None:
            raise StageFailed("the job reported no accuracy")
        if accuracy < MIN_ACCURACY:
            raise StageFailed(f"test accuracy {accuracy:.4f} is below {MIN_ACCURACY}")
        self.out.print(f"[green bold]Test accuracy: {accuracy:.4f}[/] (>= {MIN_ACCURACY})")
        return accuracy

    # -- 3
    def sweep(self) -> dict:
        from trainyard.cli import sweeps as sweeps_cli
        from trainyard.specs import load_yaml, parse_sweep_spec

        raw = load_yaml(SWEEP_SPEC.read_text(), source=str(SWEEP_SPEC))
        spec = parse_sweep_spec(raw, source=str(SWEEP_SPEC))
        sweep = self.client.submit_sweep(raw)
        self.running = ("sweep", sweep["id"])
        s = spec.sweep
        self.out.print(f"Submitted {SWEEP_SPEC.relative_to(REPO)} as sweep [bold]{sweep['id']}[/]: "
                       f"{s.num_trials} trials of {spec.resources.workers} worker, {s.max_concurrent_trials} at a "
                       f"time, {s.algorithm}/{s.scheduler}, {spec.training.epochs} epochs each", highlight=False)
        final = sweeps_cli.follow_sweep(self.client, sweep["id"])
        self.running = None
        sweeps_cli.print_sweep(self.client, final)  # the leaderboard, as `trainyard sweeps show`
        if final.get("state") != "SUCCEEDED":
            raise StageFailed(f"the sweep ended {final.get('state')}")
        if not (final.get("model") or {}).get("model_version"):
            raise StageFailed("the sweep registered no model (no trial finished)")
        return final

    # -- 4
    def promote(self, sweep: dict) -> str:
        from trainyard.cli.endpoints import print_event
        from trainyard.cli.main import build_parser
        from trainyard.errors import NotFoundError

        model = sweep["model"]["model_name"]
        version = str(sweep["model"]["model_version"])
        policy = sweep.get("promote") or {}
        name = policy.get("endpoint") or model
        self.out.print(f"The sweep's promote: block hands {model} version {version} (alias candidate) to the "
                       f"server's promotion; waiting for its decision", highlight=False)
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        shown = 0
        traffic = _Traffic(self)
        try:
            while True:
                events = promotion_events(self.client.model_history(model), version)
                for event in events[shown:]:
                    print_event(event)
                shown = len(events)
                final = verdict(events)
                if final is not None:
                    break
                if any(e.get("kind") == "canary_started" for e in events):
                    traffic.send(name, seconds=1.0)  # the gates need requests to judge the canary
                elif time.monotonic() > deadline:
                    raise StageFailed(f"no promotion decision for {model} version {version} after "
                                      f"{PROMOTION_TIMEOUT_S:.0f} s (see {os.environ['TRAINYARD_HOME']}/logs/server.log)")
                else:
                    time.sleep(1.0)
        finally:
            traffic.close()
        if traffic.sent:
            self.out.print(f"(sent {traffic.sent} requests to the endpoint during the canary window, "
                           f"{traffic.failed} failed)", highlight=False)
        if final["kind"] == "failed":
            raise StageFailed(f"the promotion failed: {final.get('reason')}")
        try:
            self.client.get_endpoint(name)
        except NotFoundError:
            # not promoted, and the champion from an earlier demo is not served since that stack stopped
            out = self.client.deploy_endpoint(model, alias="champion")
            self.out.print(f"Version {version} was not promoted; deployed the champion, version {out['version']}, "
                           f"to endpoint {name}", highlight=False)
        show = build_parser().parse_args(["endpoints", "show", name])  # as `trainyard endpoints show`
        show.func(show)
        return name

    # -- 5
    def predict(self, name: str) -> None:
        import httpx
        from workloads.cnn.data import digits_arrays

        _, _, x_test, y_test = digits_arrays()
        url = self.client.get_endpoint(name)["url"]
        self.out.print(f"POST {url}  (Serve's HTTP port, no token; one held-out test digit per request)",
                       highlight=False)
        rows, correct = [], 0
        with httpx.Client(timeout=60.0) as http:
            for i in pick_digits(y_test.tolist()):
                resp = http.post(url, json={"inputs": [to_pixels(x_test[i])]})
                if resp.status_code != 200:
                    raise StageFailed(f"POST {url} answered HTTP {resp.status_code}: {resp.text[:300]}")
                index, label, predicted, prob = prediction_row(i, int(y_test[i]), resp.json())
                correct += predicted == label
                rows.append((index, label, predicted, f"{prob:.4f}", resp.headers.get("x-trainyard-version", ""),
                             "yes" if predicted == label else "NO"))
        self.ui.table(None, ["test digit #", "label", "predicted", "probability", "served by version", "correct"], rows)
        self.out.print(f"{correct}/{len(rows)} correct", highlight=False)

    def cancel_running(self) -> None:
        if self.client is None or self.running is None:
            return
        kind, ident = self.running
        try:
            (self.client.cancel_sweep if kind == "sweep" else self.client.cancel_job)(ident)
            self.ui.stderr().print(f"cancelled {kind} {ident}")
        except Exception:  # the stack is going down anyway
            pass

    def summary(self) -> None:
        total = time.monotonic() - self.t0
        rows = [(title, fmt_duration(took), outcome) for title, took, outcome in self.times]
        rows.append(("total", fmt_duration(total), ""))
        self.ui.table("Demo stages", ["stage", "wall time", "outcome"], rows)
        load = os.getloadavg()
        self.out.print(f"Demo finished in {total:.0f} s (load average now {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
                       f"{os.cpu_count()} CPUs).", highlight=False)


    def console_hint(self, *, running: bool) -> None:
        """The last line: where the web console is (see docs/console.md)."""
        client = getattr(self, "client", None)
        if client is None:
            return
        home = _shown_home()
        token = f"{home}/admin.token"
        if running:
            self.out.print(f"Web console: {client.url}/  (sign in with the token in {token})", highlight=False)
        else:
            self.out.print(f"Web console: {client.url}/ once `TRAINYARD_HOME={home} trainyard up` runs again "
                           f"(sign in with the token in {token})", highlight=False)


class _Traffic:
    """Requests to the endpoint while a canary is observed (a second demo run has a champion)."""

    def __init__(self, demo: Demo):
        self.demo, self.http, self.url, self.sent, self.failed = demo, None, None, 0, 0

    def send(self, name: str, *, seconds: float) -> None:
        import httpx
        from workloads.cnn.data import digits_arrays

        if self.http is None:
            self.http = httpx.Client(timeout=10.0)
            self.url = self.demo.client.get_endpoint(name)["url"]
            _, _, x_test, _ = digits_arrays()
            self.payloads = [{"inputs": [to_pixels(x)]} for x in x_test[:50]]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                ok = self.http.post(self.url, json=self.payloads[self.sent % len(self.payloads)]).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.sent += 1
            self.failed += not ok

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


def _shown_home() -> str:
    home = Path(os.environ["TRAINYARD_HOME"]).resolve()
    try:
        return str(home.relative_to(Path.cwd()))
    except ValueError:
        return str(home)


def main() -> int:
    os.environ.setdefault("TRAINYARD_HOME", str(REPO / ".trainyard-demo"))
    signal.signal(signal.SIGTERM, _sigterm)

    from trainyard.errors import TrainyardError
    from trainyard.local import stack

    demo = Demo()
    out = demo.out
    load = os.getloadavg()
    out.print(f"[bold]Trainyard demo[/] (home: {os.environ['TRAINYARD_HOME']}; load average {load[0]:.1f} "
              f"{load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs)", highlight=False)
    started_here = not stack.is_up()
    total = 6
    code = 1
    try:
        with demo.stage(1, total, "Start the local stack"):
            demo.start_stack()
        with demo.stage(2, total, f"Train {SPEC.relative_to(REPO)}"):
            demo.train()
        with demo.stage(3, total, f"Sweep {SWEEP_SPEC.relative_to(REPO)}"):
            sweep = demo.sweep()
        with demo.stage(4, total, "Promote the sweep's winner to an endpoint"):
            endpoint = demo.promote(sweep)
        with demo.stage(5, total, f"Call endpoint {endpoint} over HTTP"):
            demo.predict(endpoint)
        code = 0
    except StageFailed as exc:
        demo.ui.stderr().print(f"[red]error:[/] {exc}")
    except TrainyardError as exc:
        demo.ui.stderr().print(f"[red]error:[/] {exc}")
        code = exc.exit_code or 1
    except KeyboardInterrupt:
        demo.ui.stderr().print("interrupted")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.cancel_running()
        with demo.stage(6, total, "Stop the local stack"):
            if started_here:
                with demo.ui.stderr().status("stopping the local stack..."):
                    stack.down()
                out.print("Stopped the local stack. Runs, sweeps and models stay in the home: "
                          f"`TRAINYARD_HOME={_shown_home()} trainyard up` brings MLflow back to browse them.")
            else:
                out.print("The stack was running before the demo; left it running (`trainyard down` stops it).")
        demo.summary()
        demo.console_hint(running=not started_here)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`trainyard endpoints deploy|list|show|predict|delete` and `trainyard models promote|rollback|history`.

Thin over the SDK (trainyard.Client). Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_FAILED, EXIT_OK, SpecError

__all__ = ["add_parser"]


def add_parser(nouns) -> None:
    eps = nouns.add_parser("endpoints", help="serve registered models on Ray Serve", **fmt("""
        An endpoint serves one registered model: every live version behind one route,
        /v1/endpoints/NAME/predict, with traffic split by weight (canaries). See docs/serving.md.
        """, """
        trainyard endpoints deploy cnn-digits
        trainyard endpoints predict cnn-digits --data digit.json
        """))
    verbs = eps.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("deploy", help="deploy a model version (champion by default)", **fmt("""
        Serve MODEL: --version V, --alias A, or by default its `champion` (else its latest
        version). If the endpoint exists, it moves to that version with zero downtime.
        --spec FILE gives autoscaling, batching, replica resources and the endpoint name.
        """, """
        trainyard endpoints deploy cnn-digits
        trainyard endpoints deploy cnn-digits --version 3
        trainyard endpoints deploy cnn-digits --spec examples/endpoint-cnn.yaml
        """))
    p.add_argument("model", metavar="MODEL", nargs="?", help="registered model name (or give it in --spec)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--version", help="model version to serve")
    sel.add_argument("--alias", help="registry alias to serve, e.g. champion")
    p.add_argument("--spec", metavar="FILE", help="endpoint spec YAML")
    p.add_argument("--cluster", help="registered cluster (default: local)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_deploy)

    p = verbs.add_parser("list", help="list endpoints", **fmt("List endpoints and their traffic split.",
                                                              "trainyard endpoints list"))
    p.add_argument("--cluster")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("show", help="versions, weights, replicas, request rate, errors, latency", **fmt("""
        Show an endpoint: each version's traffic weight and role (stable, canary, draining),
        requests, error rate, p50/p99 latency (overall and over the last ~10 s, with the
        request rate), and the replicas per deployment.
        """, "trainyard endpoints show cnn-digits"))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cluster")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = verbs.add_parser("predict", help="send a JSON payload to an endpoint", **fmt("""
        POST the JSON in FILE (or stdin with --data -) to the endpoint and print the answer.
        A payload of the wrong shape fails with exit 2 and names the field.
        """, """
        trainyard endpoints predict cnn-digits --data digit.json
        echo '{"inputs": [[0,0,5,13,9,1,0,0], ...]}' | trainyard endpoints predict cnn-digits --data -
        """))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--data", required=True, metavar="FILE|-", help="JSON payload file, or - for stdin")
    p.add_argument("--cluster")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("delete", help="delete an endpoint", **fmt("Remove the endpoint's Serve application.",
                                                                   "trainyard endpoints delete cnn-digits"))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cluster")
    p.set_defaults(func=cmd_delete)

    models = nouns.add_parser("models", help="promote registered models; their promotion history", **fmt("""
        Promotion: the model's `candidate` is compared with its `champion`; a winner is
        deployed as a canary, then promoted or rolled back by the policy's gates.
        """, """
        trainyard models promote cnn-digits --policy promote.yaml
        trainyard models rollback cnn-digits
        trainyard models history cnn-digits
        """))
    mverbs = models.add_subparsers(dest="verb", metavar="VERB")
    mverbs.required = True
    p = mverbs.add_parser("promote", help="promote the candidate (canary, gates, rollback)", **fmt("""
        Run a promotion of MODEL's candidate (alias `candidate`, or --candidate VERSION) with
        the policy in --policy FILE (a sweep's promote: block; defaults otherwise). Waits for
        the verdict unless --no-wait; exit 0 when promoted, 1 when rejected or rolled back.
        """, """
        trainyard models promote cnn-digits
        trainyard models promote cnn-digits --candidate 4 --policy promote.yaml
        """))
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--candidate", help="version to promote (default: alias candidate)")
    p.add_argument("--policy", metavar="FILE", help="promotion policy YAML")
    p.add_argument("--endpoint-spec", metavar="FILE", help="endpoint spec YAML used if the endpoint is created")
    p.add_argument("--cluster")
    p.add_argument("--no-wait", action="store_true", help="start it and return")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_promote)

    p = mverbs.add_parser("rollback", help="serve again the version from before the last promotion", **fmt("""
        Roll back MODEL's last promotion: its endpoint serves again the version that served
        before (from the promotion history) and `champion` moves back to it. Each roll-back
        undoes one more promotion; exit 6 (conflict) when there is nothing to roll back.
        """, """
        trainyard models rollback cnn-digits
        """))
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--cluster")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_rollback)

    p = mverbs.add_parser("history", help="every promotion decision with its evidence", **fmt(
        "Show the champion, the candidate, and every promotion event (compared, canary_started, promoted, "
        "rejected, rolled_back, failed) with its reason and evidence.", "trainyard models history cnn-digits"))
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_history)


def _yaml_file(path_arg: str | None, flag: str):
    if path_arg is None:
        return None
    from trainyard.specs import load_yaml

    path = Path(path_arg).expanduser()
    if not path.is_file():
        raise SpecError(f"no such file: {path_arg}", field=flag, value=path_arg, fix="give a YAML file")
    return load_yaml(path.read_text(), source=str(path))


def cmd_deploy(args) -> int:
    from trainyard.specs import parse_endpoint_spec

    spec = _yaml_file(args.spec, "--spec")
    if spec is not None:
        if args.model and "model" not in spec:
            spec["model"] = args.model
        parse_endpoint_spec(spec, source=args.spec)  # fail here, exit 2, before calling the server
    elif not args.model:
        raise SpecError("give MODEL or --spec FILE", field="MODEL", fix="trainyard endpoints deploy cnn-digits")
    out = context.client(args).deploy_endpoint(args.model, version=args.version, alias=args.alias, spec=spec,
                                        cluster=args.cluster)
    if args.json:
        ui.print_json(out)
    else:
        verb = "Deployed" if out.created else "Moved"
        ui.stdout().print(f"{verb} endpoint [bold]{out.name}[/]: {out.model} version {out.version}\n"
                          f"  POST {out.url}", highlight=False)
    return EXIT_OK


def cmd_list(args) -> int:
    eps = context.client(args).list_endpoints(cluster=args.cluster)
    if args.json:
        ui.print_json(eps)
        return EXIT_OK
    if not eps:
        ui.stdout().print("No endpoints. Deploy one: trainyard endpoints deploy MODEL")
        return EXIT_OK
    rows = [(e.name, e.model, e.status, ", ".join(f"v{v}:{w:.0%}" for v, w in e.weights.items()), e.canary or "",
             e.url) for e in eps]
    ui.table(None, ["name", "model", "status", "traffic", "canary", "url"], rows)
    return EXIT_OK


def _ms(value) -> str:
    return "" if value is None else f"{value:.1f}"


def cmd_show(args) -> int:
    ep = context.client(args).get_endpoint(args.name, cluster=args.cluster)
    if args.json:
        ui.print_json(ep)
        return EXIT_OK
    out = ui.stdout()
    out.print(f"Endpoint [bold]{ep.name}[/] ({ep.model}, family {ep.family}) {ep.status}\n"
              f"  POST {ep.url}", highlight=False)
    reps = ", ".join(f"{k}: {v.running}/{v.target} running" for k, v in ep.replicas.items())
    a = ep.autoscaling
    out.print(f"  replicas: {reps} (autoscaling {a['min_replicas']}..{a['max_replicas']}, "
              f"target {a['target_ongoing_requests']} in flight each)", highlight=False)
    rows = []
    for v in ep.versions:
        rate = v.error_rate
        rows.append((v.version, f"{v.weight:.0%}", v.role, v.requests, f"{v.request_rate:.1f}/s",
                     "" if rate is None else f"{rate:.2%}", _ms(v.p50_ms), _ms(v.p99_ms), _ms(v.recent_p99_ms)))
    ui.table(None, ["version", "weight", "role", "requests", "rate", "errors", "p50 ms", "p99 ms", "p99 10s"], rows)
    return EXIT_OK


def cmd_predict(args) -> int:
    text = sys.stdin.read() if args.data == "-" else None
    if text is None:
        path = Path(args.data).expanduser()
        if not path.is_file():
            raise SpecError(f"no such file: {args.data}", field="--data", value=args.data,
                            fix="give a JSON file, or - to read stdin")
        text = path.read_text()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc.msg} at line {exc.lineno}", field="--data", value=args.data,
                        fix="send a JSON object, e.g. {\"inputs\": [...]}") from None
    ui.print_json(context.client(args).predict(args.name, payload, cluster=args.cluster))
    return EXIT_OK


def cmd_delete(args) -> int:
    context.client(args).delete_endpoint(args.name, cluster=args.cluster)
    ui.stdout().print(f"Deleted endpoint {args.name}.")
    return EXIT_OK


def cmd_promote(args) -> int:
    from trainyard.specs import parse_promotion_policy

    policy = _yaml_file(args.policy, "--policy")
    if policy is not None and "promote" in policy and len(policy) > 1:
        policy = policy["promote"]  # a whole sweep spec: take its promote: block
    parse_promotion_policy(policy, source=args.policy or "policy")
    endpoint = _yaml_file(args.endpoint_spec, "--endpoint-spec")
    record = context.client(args).promote_model(args.model, candidate=args.candidate, policy=policy, endpoint=endpoint,
                                         cluster=args.cluster, wait=not args.no_wait)
    if args.json:
        ui.print_json(record)
    else:
        for event in record.events:
            print_event(event.model_dump())
        if args.no_wait:
            ui.stdout().print(f"Promotion {record.id} started; follow it: trainyard models history {args.model}")
        elif record.error:
            ui.stdout().print(f"[red]failed:[/] {record.error.get('message')}")
    return EXIT_OK if args.no_wait or record.state == "promoted" else EXIT_FAILED


def cmd_rollback(args) -> int:
    out = context.client(args).rollback_model(args.model, cluster=args.cluster)
    if args.json:
        ui.print_json(out)
    else:
        ui.stdout().print(f"Rolled back {args.model}: endpoint {out.endpoint} serves v{out.to_version} again "
                          f"(was v{out.from_version}); champion is v{out.champion}.", highlight=False)
    return EXIT_OK


def print_event(e: dict) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("time") or 0))
    colour = {"promoted": "green", "rolled_back": "red", "reverted": "red", "failed": "red", "rejected": "yellow"}.get(e["kind"], "")
    kind = f"[{colour}]{e['kind']}[/]" if colour else e["kind"]
    champion = f"champion v{e['champion']}" if e.get("champion") is not None else "no champion"
    ui.stdout().print(f"{when}  v{e.get('candidate')} ({champion})  {kind}: {e['reason']}", highlight=False)
    ev = e.get("evidence") or {}
    for side in ("canary", "champion"):
        s = ev.get(side)
        if isinstance(s, dict):
            ui.stdout().print(f"      {side}: {s.get('requests')} requests, {s.get('errors')} errors, "
                                 f"p50 {_ms(s.get('p50_ms'))} ms, p99 {_ms(s.get('p99_ms'))} ms", highlight=False)


def cmd_history(args) -> int:
    hist = context.client(args).model_history(args.model)
    if args.json:
        ui.print_json(hist)
        return EXIT_OK
    ui.stdout().print(f"Model [bold]{args.model}[/]: champion v{hist.champion}, "
                      f"candidate v{hist.candidate}", highlight=False)
    if not hist.events:
        ui.stdout().print("No promotion yet. Run one: trainyard models promote " + args.model)
    for event in hist.events:
        print_event(event)
    return EXIT_OK

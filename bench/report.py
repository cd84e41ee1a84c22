"""BENCHMARKS.md's measured part: the figures of one `python -m bench` run as Markdown,
one function per section, written between the file's markers."""

from collections import defaultdict
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- scripts/bench: begin -->", "<!-- scripts/bench: end -->"

Result = dict[str, Any]
# From the workers' profiles, per pair: packages in the table, functions in the text.
PACKAGE_ROWS = 6
DIFFERENCE_COUNT = 8


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def loads(figures: dict[str, Any]) -> str:
    """The 1-minute load average at a bench's start and end."""
    return f"{figures['loadavg_before'][0]}-{figures['loadavg_after'][0]}"


def short(result: Result) -> str:
    """'redis x postgresql' from the variant id."""
    parts = result["variant"].split("-")
    return f"{parts[1]} x {parts[2]}"


def table(header: list[str], align: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; align holds '---' or '---:' per column."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def rounds_line(label: str, results: list[Result], pick: Any, floor: bool = False) -> str:
    """'Label: pair generated [...], stock [...]; ...': pick(a side's figures) names the
    rounds; with floor, the raw broker floor's rounds follow."""

    def rounds(result: Result) -> str:
        line = f"generated {pick(result['generated'])}, stock {pick(result['stock'])}"
        return line + (f", floor {result['floor']['rounds']}" if floor else "")

    return f"{label}: " + "; ".join(f"{short(result)} {rounds(result)}" for result in results)


def heading(host: dict[str, str], results: list[Result]) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in results[0]["versions"].items())
    return [
        f"Measured by `scripts/bench` on {host['date']}: {host['cpu']}, {host['memory']}, "
        f"{host['os']}; redis-server {host['redis-server']}, RabbitMQ {host['rabbitmq']}, "
        f"PostgreSQL {host['postgresql']}; in the projects' environments {versions}.",
        "",
        "**Figures taken under load are not final.** This machine has 2 cores and is shared:",
        "other people's tests run beside the benchmark. Each figure carries the 1-minute load",
        "average at its start and end (`load`); where it is well above 0, rerun before drawing",
        "conclusions. Generated and stock ran in alternating rounds on the same servers, so",
        "their ratio is fairer than either number alone.",
        "",
    ]


def method(results: list[Result], args: Any) -> list[str]:
    return [
        f"Each project ran with its default answers and {results[0]['generated']['workers']} "
        f"workers (worker_count); throughput is the median of {args.rounds} groups of "
        f"{args.tasks} `add` with results on ({args.postgresql_tasks} with the PostgreSQL "
        f"backend, which commits every result), round trips are {args.latency_calls} "
        f"sequential `add` calls ({args.postgresql_latency_calls} on PostgreSQL, polled every "
        f"1 ms), cold start is the median of {args.cold_starts} worker starts. Stock Celery "
        "runs in its own environment (`celery[redis]`, no hiredis) at the same versions; the "
        "floor runs in the generated project's.",
        "",
    ]


def throughput_row(result: Result) -> list[Any]:
    gen, stock, floor = result["generated"], result["stock"], result["floor"]
    gen_rate, stock_rate = gen["add_throughput_per_s"], stock["add_throughput_per_s"]
    return [
        short(result),
        f"{gen_rate:.0f}",
        f"{stock_rate:.0f}",
        f"{floor['per_s']:.0f}",
        ratio(gen_rate, stock_rate),
        ratio(gen_rate, floor["per_s"]),
        f"{loads(gen)}, {loads(stock)}, {floor['load'][0]}",
    ]


def throughput(results: list[Result]) -> list[str]:
    header = ["broker x backend", "generated", "stock Celery", "raw broker floor"]
    header += ["generated/stock", "generated/floor", "load gen, stock, floor"]
    return [
        "### add throughput (tasks/s)",
        "",
        *table(header, ["---", *["---:"] * 5, "---"], [throughput_row(r) for r in results]),
        "",
        rounds_line("Rounds", results, lambda side: side["add_throughput_rounds"], floor=True),
        "",
    ]


def drain_row(result: Result) -> list[Any]:
    gen, stock = result["generated"], result["stock"]
    return [
        short(result),
        f"{gen['drain_per_s']:.0f}",
        f"{stock['drain_per_s']:.0f}",
        ratio(gen["drain_per_s"], stock["drain_per_s"]),
        f"{gen['short_behind_long_s']:.2f}",
        f"{stock['short_behind_long_s']:.2f}",
    ]


def drain(results: list[Result]) -> list[str]:
    header = ["broker x backend", "generated", "stock Celery", "generated/stock"]
    header += ["generated: 10 adds behind long tasks, s", "stock: the same, s"]
    return [
        "### Draining a full queue (tasks/s), and short tasks behind long ones",
        "",
        "Drain: the workers stop consuming, the same group is sent, and the time runs from "
        "their consuming again to the last result (the workers set the pace, not the "
        "sender); one after each throughput group, median. Behind long tasks: seconds until "
        "10 adds sent while long_task(4) holds every pool process but one have their "
        "results; a worker that reserved adds behind its long tasks holds them back.",
        "",
        *table(header, ["---", *["---:"] * 5], [drain_row(r) for r in results]),
        "",
        rounds_line("Rounds (drain)", results, lambda side: side["drain_rounds"]),
        "",
    ]


def cpu_row(result: Result) -> list[Any]:
    gen, stock = result["generated"]["cpu"], result["stock"]["cpu"]
    short_only = result["generated"]["cpu_short_tasks_only"]

    def everything(side: dict[str, Any]) -> int:
        return sum(side[f"{part}_us_per_task"] for part in ("worker", "client", "servers"))

    return [
        short(result),
        gen["worker_us_per_task"],
        stock["worker_us_per_task"],
        ratio(gen["worker_us_per_task"], stock["worker_us_per_task"]),
        short_only["worker_us_per_task"],
        ratio(short_only["worker_us_per_task"], stock["worker_us_per_task"]),
        gen["client_us_per_task"],
        stock["client_us_per_task"],
        gen["servers_us_per_task"],
        stock["servers_us_per_task"],
        ratio(everything(gen), everything(stock)),
    ]


def cpu(results: list[Result], args: Any) -> list[str]:
    header = ["broker x backend", "worker: generated", "stock", "generated/stock"]
    header += ["generated, prefetch 4", "its /stock", "client: generated", "stock"]
    header += ["servers: generated", "stock", "all three: generated/stock"]
    return [
        "### CPU time per add (microseconds)",
        "",
        "Per `add`, by bench/cpu.py: the worker's CPU (main and pool processes), the "
        "client's (sending the group and reading its results) and the servers' (the "
        "broker's and the result backend's processes, from /proc); one worker, a group of "
        f"{args.tasks} ({args.postgresql_tasks} on PostgreSQL), the median of "
        f"{args.rounds} rounds. Load moves this far less than tasks/s. On two cores the "
        "three share the CPU, so their sum sets the rate. *Prefetch 4* is the generated "
        "worker with `--prefetch-multiplier=4`, Celery's default, measured in the same "
        "rounds: what the template's prefetch of 1 costs (config.py says what it buys).",
        "",
        *table(header, ["---", *["---:"] * 10], [cpu_row(r) for r in results]),
        "",
        rounds_line("Rounds (worker)", results, lambda side: side["cpu"]["worker_us_rounds"]),
        "",
        rounds_line("Rounds (servers)", results, lambda side: side["cpu"]["servers_us_rounds"]),
        "",
        "Rounds (generated worker, prefetch 4): "
        + "; ".join(
            f"{short(r)} {r['generated']['cpu_short_tasks_only']['worker_us_rounds']}"
            for r in results
        ),
        "",
    ]


def by_function(result: Result, side: str) -> dict[str, float]:
    return dict(result[side]["cpu"]["profile_us_per_task"])


def package(function: str) -> str:
    """Where a profiled function lives: "send (kombu/messaging.py)" is kombu's,
    "dumps (stdlib/json/__init__.py)" stdlib/json's."""
    path = function[function.rindex("(") + 1 : -1].removesuffix(".py")
    parts = path.split("/")
    return "/".join(parts[:2] if parts[0] == "stdlib" else parts[:1])


def by_package(result: Result, side: str) -> dict[str, float]:
    totals: defaultdict[str, float] = defaultdict(float)
    for function, us in by_function(result, side).items():
        totals[package(function)] += us
    return totals


def gaps(generated: dict[str, float], stock: dict[str, float]) -> list[tuple[str, float]]:
    """Generated less stock, largest first either way (missing from one side: 0 there)."""
    names = generated.keys() | stock.keys()
    change = {name: generated.get(name, 0.0) - stock.get(name, 0.0) for name in names}
    return sorted(change.items(), key=lambda item: -abs(item[1]))


def package_rows(result: Result) -> list[list[Any]]:
    gen, stock = by_package(result, "generated"), by_package(result, "stock")
    rows = []
    for number, (name, gap) in enumerate(gaps(gen, stock)[:PACKAGE_ROWS]):
        first = short(result) if number == 0 else ""
        rows.append(
            [first, f"`{name}`", round(gen.get(name, 0)), round(stock.get(name, 0)), f"{gap:+.0f}"]
        )
    return rows


def differences(result: Result) -> str:
    gen, stock = by_function(result, "generated"), by_function(result, "stock")
    largest = gaps(gen, stock)[:DIFFERENCE_COUNT]
    return f"{short(result)}: " + ", ".join(f"`{name}` {us:+.0f}" for name, us in largest)


def profiles(results: list[Result]) -> list[str]:
    header = ["broker x backend", "package", "generated", "stock", "generated - stock"]
    rows = [row for result in results for row in package_rows(result)]
    return [
        "### Where the worker's CPU goes (self time, microseconds per add)",
        "",
        "Two more worker lives per side in the first round (a group of adds, and none: "
        "the difference, as above), each process sampled by bench/sigprof.py on the CPU "
        "time it spends (the kernel's profiling timer), so waiting for the broker or for "
        "a core is never counted. A function's self time holds the C code it called (a "
        "socket write, a JSON encoder). The samples are weighed by the worker's measured "
        "CPU in those lives; a sample is worth a few us per add, so read differences "
        "under about 10 us as noise. By package, the largest differences:",
        "",
        *table(header, ["---", "---", "---:", "---:", "---:"], rows),
        "",
        "By function, the largest differences, generated less stock: "
        + "; ".join(differences(result) for result in results),
        "",
    ]


def latency_rows(result: Result) -> list[list[Any]]:
    rows = []
    for label in ("generated", "stock"):
        f = result[label]
        rows.append(
            [
                short(result),
                label,
                f"{f['latency_p50_ms']:.2f}",
                f"{f['latency_p99_ms']:.2f}",
                f"{f['cold_start_s']:.2f}",
                f"{f['long_task_overhead_ms']:.0f}",
                f"{f['progress_update_ms']:.2f}",
                loads(f),
            ]
        )
    return rows


def latency(results: list[Result]) -> list[str]:
    header = ["broker x backend", "", "p50 ms", "p99 ms", "cold start s"]
    header += ["long_task(2) beyond 2 s, ms", "one progress report, ms", "load"]
    rows = [row for result in results for row in latency_rows(result)]
    return [
        "### add round trip, worker cold start, long_task",
        "",
        *table(header, ["---", "---", *["---:"] * 5, "---"], rows),
        "",
        rounds_line(
            "Cold starts (s)",
            results,
            lambda side: side["cold_start_runs_s"],
        ),
        "",
    ]


def bake_rows(results: list[Result]) -> list[list[Any]]:
    cli = [
        [
            f"CLI bake, {short(r)} (median of {len(r['bake_runs_s'])}: {r['bake_runs_s']})",
            f"{r['bake_s']:.2f}",
            r["bake_load"][0],
        ]
        for r in results
    ]
    in_process = [
        [
            f"in-process `cookiecutter()` bake, {short(r)} (median of "
            f"{len(r['bake_in_process_runs_s'])}: {r['bake_in_process_runs_s']})",
            f"{r['bake_in_process_s']:.2f}",
            r["bake_load"][0],
        ]
        for r in results
    ]
    return cli + in_process


def tier_rows(static: dict[str, Any] | None, run_tier: dict[str, Any] | None) -> list[list[Any]]:
    if static:
        static_row = [
            f"static tier, all variants, `-n {static['jobs']}` ({static['summary']})",
            f"{static['seconds']:.0f}",
            static["load"][0],
        ]
    else:
        static_row = ["static tier", "not timed in this run", ""]
    if run_tier:
        run_row = [
            f"run tier, from {run_tier['source']} ({run_tier['tests']} tests, "
            f"{run_tier['failed']} failed)",
            f"{run_tier['seconds']:.0f}",
            "",
        ]
    else:
        run_row = ["run tier", "not run by this benchmark (give --run-tier-junit)", ""]
    return [static_row, run_row]


def bakes_and_tiers(
    results: list[Result], static: dict[str, Any] | None, run_tier: dict[str, Any] | None
) -> list[str]:
    rows = bake_rows(results) + tier_rows(static, run_tier)
    return [
        "### Bakes and test tiers",
        "",
        *table(["what", "seconds", "load"], ["---", "---:", "---"], rows),
    ]


def report(
    host: dict[str, str],
    results: list[Result],
    static: dict[str, Any] | None,
    run_tier: dict[str, Any] | None,
    args: Any,
) -> str:
    """The measured part of BENCHMARKS.md, markers included."""
    lines = [
        BEGIN,
        *heading(host, results),
        *method(results, args),
        *throughput(results),
        *drain(results),
        *cpu(results, args),
        *profiles(results),
        *latency(results),
        *bakes_and_tiers(results, static, run_tier),
        END,
    ]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Put text between the file's markers, keeping what is around them."""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if BEGIN in old and END in old:
            before, rest = old.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            path.write_text(before + text + after, encoding="utf-8")
            return
    path.write_text(f"# Benchmarks\n\n{text}\n", encoding="utf-8")

"""Prometheus text exposition and the clinvk metric set."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading

import pytest

from clinvk_lib.events import Usage
from clinvk_lib.server.metrics import (Counter, Gauge, Histogram, Registry, ServerMetrics,
                                       bucket_bound, format_value)

_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:%s(?:,%s)*)?\})? (\S+)$' % (_PAIR, _PAIR))


def exposition_problems(text: str) -> list:
    """What ``promtool check metrics`` would reject in ``text``, checked without promtool:
    line syntax, TYPE before samples, samples belonging to their family, no duplicate series,
    cumulative histogram buckets ending in +Inf that equals _count."""
    problems = []
    if not text.endswith("\n"):
        problems.append("missing final newline")
    types, seen, current = {}, set(), None
    buckets = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if parts[1] == "TYPE":
                if parts[2] in types or parts[3] not in ("counter", "gauge", "histogram"):
                    problems.append("bad TYPE line: " + line)
                types[parts[2]] = parts[3]
                current = parts[2]
            continue
        match = _SAMPLE.match(line)
        if not match:
            problems.append("bad sample line: " + line)
            continue
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if types.get(current) == "histogram" \
            else name
        if family != current:
            problems.append("sample outside its family: " + line)
        if (name, labels) in seen:
            problems.append("duplicate series: " + line)
        seen.add((name, labels))
        try:
            float(value.replace("Inf", "inf"))
        except ValueError:
            problems.append("bad value: " + line)
        if name.endswith("_bucket"):
            series = re.sub(r',?le="[^"]*"', "", labels).replace("{}", "")
            buckets.setdefault((name, series), []).append((labels, float(value)))
        if name.endswith("_count") and types.get(family) == "histogram":
            last = buckets.get((family + "_bucket", labels), [])
            if not last or 'le="+Inf"' not in last[-1][0] or last[-1][1] != float(value):
                problems.append("+Inf bucket does not match _count: " + line)
    for (name, _), values in buckets.items():
        counts = [v for _, v in values]
        if counts != sorted(counts):
            problems.append("buckets not cumulative: " + name)
    return problems


def test_format_checker_notices_broken_text():
    assert exposition_problems('x{a=b} 1\n')
    assert exposition_problems('# TYPE x counter\nx 1\nx 2\n')
    assert exposition_problems('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n'
                               'h_sum 1\nh_count 1\n')


def test_format_checker_accepts_valid_histograms():
    registry = Registry()
    registry.register(Histogram("plain", "P.", buckets=(1,))).observe(0.5)
    registry.register(Histogram("labelled", "L.", ("a", "b"), buckets=(1,))).observe(2, "x", "y")
    assert exposition_problems(registry.render()) == []


# --- the format -------------------------------------------------------------------------------


def test_counter_exposition_is_exact():
    registry = Registry()
    c = registry.register(Counter("jobs_total", "Jobs run.", ("kind",)))
    c.inc("b")
    c.inc("a", amount=2.5)
    c.inc("b")
    assert registry.render() == (
        "# HELP jobs_total Jobs run.\n"
        "# TYPE jobs_total counter\n"
        'jobs_total{kind="a"} 2.5\n'
        'jobs_total{kind="b"} 2\n')


def test_unlabelled_metric_is_shown_as_zero_before_any_record():
    registry = Registry()
    registry.register(Counter("refused_total", "Refusals."))
    assert registry.render().endswith("refused_total 0\n")


def test_labelled_metric_without_records_shows_only_its_header():
    registry = Registry()
    registry.register(Counter("jobs_total", "Jobs.", ("kind",)))
    assert registry.render() == "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\n"


def test_label_values_escape_backslash_quote_and_newline():
    registry = Registry()
    registry.register(Counter("c_total", "C.", ("v",))).inc('a\\b"c\nd')
    assert 'c_total{v="a\\\\b\\"c\\nd"} 1\n' in registry.render()


def test_help_text_escapes_backslash_and_newline():
    registry = Registry()
    registry.register(Gauge("g", "line one\nback\\slash"))
    assert registry.render().startswith("# HELP g line one\\nback\\\\slash\n")


def test_histogram_exposition_is_cumulative_with_inf_sum_and_count():
    registry = Registry()
    h = registry.register(Histogram("wait_seconds", "Waits.", ("q",), buckets=(0.5, 1, 2)))
    for value in (0.1, 0.7, 0.8, 5):
        h.observe(value, "x")
    assert registry.render() == (
        "# HELP wait_seconds Waits.\n"
        "# TYPE wait_seconds histogram\n"
        'wait_seconds_bucket{q="x",le="0.5"} 1\n'
        'wait_seconds_bucket{q="x",le="1"} 3\n'
        'wait_seconds_bucket{q="x",le="2"} 3\n'
        'wait_seconds_bucket{q="x",le="+Inf"} 4\n'
        'wait_seconds_sum{q="x"} 6.6\n'
        'wait_seconds_count{q="x"} 4\n')


def test_value_equal_to_a_bound_counts_in_that_bucket():
    registry = Registry()
    registry.register(Histogram("h", "H.", buckets=(1, 2))).observe(1)
    assert 'h_bucket{le="1"} 1\n' in registry.render()


def test_counts_added_from_elsewhere_render_as_observations_would():
    observed, added = Histogram("h", "H.", ("a",), (1, 2)), Histogram("h", "H.", ("a",), (1, 2))
    for value in (0.5, 2, 7):
        observed.observe(value, "x")
    added.add_counts({1.0: 1, 2.0: 1, math.inf: 1}, 9.5, "x")
    assert added.render() == observed.render()


def test_added_counts_at_a_bound_the_histogram_lacks_go_to_the_next_one_above():
    h = Histogram("h", "H.", buckets=(1, 5))
    h.add_counts({3.0: 2, 99.0: 1}, 10.0)
    assert h.render()[2:] == ['h_bucket{le="1"} 0', 'h_bucket{le="5"} 2',
                              'h_bucket{le="+Inf"} 3', 'h_sum 10', 'h_count 3']


def test_bucket_bound_is_the_first_bound_at_or_above_the_value():
    assert [bucket_bound((1.0, 5.0), v) for v in (0.2, 1, 1.01, 5, 6)] == \
        [1.0, 1.0, 5.0, 5.0, math.inf]


def test_unlabelled_histogram_shows_zero_buckets_before_any_observation():
    registry = Registry()
    registry.register(Histogram("h", "H.", buckets=(1,)))
    assert registry.render().endswith('h_bucket{le="1"} 0\nh_bucket{le="+Inf"} 0\n'
                                      'h_sum 0\nh_count 0\n')


@pytest.mark.parametrize("value, text", [(3, "3"), (3.0, "3"), (0.25, "0.25"), (1e-05, "1e-05"),
                                         (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                         (math.nan, "NaN")])
def test_values_are_written_as_prometheus_reads_them(value, text):
    assert format_value(value) == text


def test_wrong_number_of_label_values_is_refused():
    c = Counter("c_total", "C.", ("a", "b"))
    with pytest.raises(ValueError, match="c_total takes labels a, b: got 1 value"):
        c.inc("x")


def test_counter_cannot_decrease():
    with pytest.raises(ValueError):
        Counter("c_total", "C.").inc(amount=-1)


def test_gauge_goes_up_down_and_can_be_set():
    g = Gauge("g", "G.")
    g.inc()
    g.inc()
    g.dec()
    assert g.value() == 1
    g.set(7)
    assert g.value() == 7


def test_callback_gauge_is_read_at_render_time():
    count = [3]
    registry = Registry()
    registry.register(Gauge("sessions", "S.", callback=lambda: count[0]))
    count[0] = 5
    assert registry.render().endswith("sessions 5\n")


def test_failing_callback_leaves_its_sample_out_and_the_page_intact():
    def broken():
        raise OSError("store unreadable")
    registry = Registry()
    registry.register(Gauge("sessions", "S.", callback=broken))
    registry.register(Counter("after_total", "A."))
    assert registry.render() == ("# HELP sessions S.\n# TYPE sessions gauge\n"
                                 "# HELP after_total A.\n# TYPE after_total counter\n"
                                 "after_total 0\n")


def test_same_name_cannot_be_registered_twice():
    registry = Registry()
    registry.register(Counter("c_total", "C."))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Gauge("c_total", "again"))


@pytest.mark.parametrize("name, labels", [("bad-name", ()), ("ok", ("le",)), ("ok", ("__x",)),
                                          ("ok", ("a-b",))])
def test_invalid_metric_or_label_names_are_refused(name, labels):
    with pytest.raises(ValueError):
        Counter(name, "x", labels)


def test_concurrent_increments_are_not_lost():
    c = Counter("c_total", "C.", ("k",))

    def worker():
        for _ in range(1000):
            c.inc("x")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value("x") == 8000


# --- the clinvk set ---------------------------------------------------------------------------

# Every family clinvk exports, with its type (test_server_hardening checks a live server's
# /metrics against it too).
FAMILIES = {
    "clinvk_http_requests_total": "counter",
    "clinvk_http_request_duration_seconds": "histogram",
    "clinvk_http_requests_in_flight": "gauge",
    "clinvk_backend_runs_total": "counter",
    "clinvk_backend_run_duration_seconds": "histogram",
    "clinvk_backend_tokens_total": "counter",
    "clinvk_rate_limited_total": "counter",
    "clinvk_auth_failures_total": "counter",
    "clinvk_sessions": "gauge",
    "clinvk_jobs_submitted_total": "counter",
    "clinvk_jobs_finished_total": "counter",
    "clinvk_jobs_queued": "gauge",
    "clinvk_jobs_running": "gauge",
    "clinvk_webhook_deliveries_total": "counter",
    "clinvk_build_info": "gauge",
    "clinvk_backend_cost_usd_total": "counter",
    "clinvk_key_runs_total": "counter",
    "clinvk_key_tokens_total": "counter",
    "clinvk_key_cost_usd_total": "counter",
}


def busy_metrics() -> ServerMetrics:
    m = ServerMetrics("1.2.3", session_count=lambda: 4, python_version="3.11.7")
    m.request_started()
    m.request_finished("POST", "/api/v1/prompt", 200, 0.3)
    m.request_started()
    m.request_finished("GET", "/api/v1/sessions/{id}", 404, 0.002)
    m.request_started()
    m.run_finished("claude", "success", 12.5, Usage(10, 20, 3, 0))
    m.run_finished("codex", "error", 0.4)
    m.rate_limited.inc()
    m.auth_failures.inc()
    m.watch_jobs(lambda: (7, 2))
    m.job_submitted("prompt")
    m.job_finished("prompt", "succeeded")
    m.webhook_attempted("retried")
    return m


def test_server_metrics_declare_every_clinvk_family():
    text = busy_metrics().render()
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert declared == FAMILIES


def test_server_metrics_exposition_has_no_format_problems():
    assert exposition_problems(busy_metrics().render()) == []


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_server_metrics_exposition_passes_promtool():
    result = subprocess.run(["promtool", "check", "metrics"], input=busy_metrics().render(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "")


def test_request_is_counted_by_method_route_template_and_status():
    text = busy_metrics().render()
    assert 'clinvk_http_requests_total{method="GET",route="/api/v1/sessions/{id}",status="404"} 1' \
        in text


def test_unknown_http_method_is_counted_as_other():
    m = ServerMetrics("1")
    m.request_started()
    m.request_finished("BREW", "/x", 405, 0.01)
    assert m.http_requests.value("OTHER", "/x", "405") == 1


def test_in_flight_counts_requests_started_and_not_finished():
    assert busy_metrics().in_flight.value() == 1


def test_run_tokens_are_counted_by_kind_and_zero_kinds_left_out():
    m = busy_metrics()
    assert [m.backend_tokens.value("claude", k) for k in ("input", "output", "cached")] == \
        [10, 20, 3]
    assert "reasoning" not in m.render()


def test_build_info_names_version_and_python():
    assert 'clinvk_build_info{version="1.2.3",python="3.11.7"} 1\n' in busy_metrics().render()


def test_sessions_gauge_reads_the_store_count():
    assert "\nclinvk_sessions 4\n" in busy_metrics().render()


def test_job_gauges_read_the_runner_and_counters_go_by_kind_status_and_outcome():
    text = busy_metrics().render()
    assert "\nclinvk_jobs_queued 7\n" in text and "\nclinvk_jobs_running 2\n" in text
    assert 'clinvk_jobs_submitted_total{kind="prompt"} 1\n' in text
    assert 'clinvk_jobs_finished_total{kind="prompt",status="succeeded"} 1\n' in text
    assert 'clinvk_webhook_deliveries_total{outcome="retried"} 1\n' in text


def test_runs_tokens_and_cost_are_counted_per_api_key_and_summed_in_usage():
    m = ServerMetrics("1")
    m.run_finished("claude", "success", 1.0, Usage(10, 20, 0, 0, cost_usd=0.25), "k1")
    m.run_finished("claude", "failure", 1.0, Usage(5, 0, 0, 0), "k2")
    m.run_finished("codex", "success", 1.0)
    usage = m.usage()
    assert usage["backends"]["claude"] == {"runs": 2, "success": 1, "failure": 1,
                                           "input_tokens": 15, "output_tokens": 20,
                                           "cost_usd": 0.25}
    assert usage["backends"]["codex"] == {"runs": 1, "success": 1, "cost_usd": 0.0}
    assert usage["keys"]["k1"] == {"runs": 1, "success": 1, "input_tokens": 10,
                                   "output_tokens": 20, "cost_usd": 0.25}
    assert 'clinvk_key_runs_total{key_id="k2",backend="claude",outcome="failure"} 1' in m.render()

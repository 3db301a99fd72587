"""packaging/grafana/backupmand.json: valid JSON in Grafana's dashboard shape, every
query valid PromQL (parsed by the real promtool) naming only metrics backupmand
exports, and every one of those names present in the real /metrics of a real daemon
after a backup (the alert rules' names too)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.exported_metrics import EXPORTED_METRICS, PROMETHEUS_METRICS, metric_names
from tests.helpers import ROOT, daemon

DASHBOARD = ROOT / "packaging" / "grafana" / "backupmand.json"
RULES = ROOT / "packaging" / "prometheus" / "backupmand-rules.yml"
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge", "gauge", "table", "state-timeline",
               "text", "piechart", "barchart", "status-history", "heatmap"}
#: Grafana's own variables, set for every query.
BUILT_IN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
#: What they might expand to, for promtool.
SUBSTITUTES = {"${datasource}": "prometheus", "$__rate_interval": "5m", "$__interval": "1m",
               "$__range": "1d", "$instance": ".*", "$label": ".*"}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>[^,]+),\s*)?(?P<label>\w+)\)$")


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel.get("targets", [])]


def variable_queries() -> list[str]:
    return [variable["query"]["query"] for variable in dashboard()["templating"]["list"]
            if variable["type"] == "query"]


def dashboard_metrics() -> set[str]:
    names = set().union(*(metric_names(expr) for expr in queries()))
    for query in variable_queries():
        match = LABEL_VALUES.match(query)
        assert match is not None, query
        names |= metric_names(match.group("selector") or "")
    return names


def rules_metrics() -> set[str]:
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    return set().union(*(metric_names(rule["expr"]) for rule in rules)) - recorded


# ---------------------------------------------------------------------------- the shape


def test_the_dashboard_is_grafana_json() -> None:
    document = dashboard()
    assert isinstance(document["title"], str) and document["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", document["uid"])
    assert isinstance(document["schemaVersion"], int) and document["schemaVersion"] >= 36
    assert document["id"] is None, "an id would clash with another dashboard on import"
    assert isinstance(document["panels"], list) and document["panels"]
    assert isinstance(document["templating"]["list"], list)
    assert set(document["time"]) == {"from", "to"}
    assert all(isinstance(tag, str) for tag in document["tags"])
    assert isinstance(document["editable"], bool) and isinstance(document["refresh"], str)


def test_panels_have_ids_types_and_a_place_of_their_own() -> None:
    ids = [panel["id"] for panel in panels()]
    assert all(isinstance(panel_id, int) for panel_id in ids) and len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert isinstance(panel["title"], str) and panel["title"], panel
        place = panel["gridPos"]
        x, y, width, height = place["x"], place["y"], place["w"], place["h"]
        assert all(isinstance(value, int) for value in (x, y, width, height)), panel["title"]
        assert x >= 0 and y >= 0 and width >= 1 and height >= 1 and x + width <= 24, panel["title"]
        covered = set(itertools.product(range(x, x + width), range(y, y + height)))
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            assert (width, height, panel["panels"]) == (24, 1, []), panel["title"]
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], f"{panel['title']}: say what it shows"
        targets = panel["targets"]
        assert targets, f"{panel['title']} queries nothing"
        assert len({target["refId"] for target in targets}) == len(targets)
        for target in targets:
            assert isinstance(target["expr"], str) and target["expr"].strip()
            assert target["datasource"] == panel["datasource"]


def test_every_variable_a_query_uses_is_defined() -> None:
    defined = {variable["name"] for variable in dashboard()["templating"]["list"]}
    used: set[str] = set()
    texts = [*queries(), *variable_queries(), json.dumps([p.get("datasource") for p in panels()])]
    for text in texts:
        used |= {braced or bare for braced, bare in VARIABLE.findall(text)}
    assert used - BUILT_IN_VARIABLES <= defined, used - BUILT_IN_VARIABLES - defined


def test_every_query_is_promql_that_promtool_parses(tmp_path: Path) -> None:
    def expand(expr: str) -> str:
        for variable, value in sorted(SUBSTITUTES.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(variable, value)
        return expr

    rules = [{"record": f"dashboard:query_{index}", "expr": expand(expr)}
             for index, expr in enumerate(queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["/usr/bin/promtool", "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_freshness_sizes_durations_failures_and_drills() -> None:
    names = dashboard_metrics()
    assert names <= EXPORTED_METRICS, names - EXPORTED_METRICS
    assert {
        "backupmand_last_success_timestamp_seconds",  # freshness per label
        "backupmand_last_upload_timestamp_seconds",  # freshness per drive
        "backupmand_last_size_bytes", "backupmand_last_duration_seconds",
        "backupmand_last_backup_failed", "backupmand_upload_failures_total",
        "backupmand_verifications_total", "backupmand_last_verified_timestamp_seconds",
    } <= names


# ---------------------------------------------------------------------------- the real /metrics


def exported_names(exposition: str) -> set[str]:
    """Every series name the exposition declares: samples, and families without samples
    yet (an absent gauge such as a label's first success), counters with _total."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names |= {sample.name for sample in family.samples}
    return names


def test_every_metric_the_dashboard_and_rules_read_is_in_a_real_metrics_answer(make_config):
    with daemon(make_config()) as server:
        status, body = server.request("POST", "/api/backups")
        assert status == 200, body
        (backup_id,) = body["BackupIds"]
        assert server.wait_backup(backup_id)["Status"] == "finished"
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            assert response.status == 200
            exposition = response.read().decode("utf-8")
    exported = exported_names(exposition)
    assert 'backupmand_last_success_timestamp_seconds{label="app"}' in exposition
    needed = (dashboard_metrics() | rules_metrics()) - PROMETHEUS_METRICS
    missing = sorted(needed - exported)
    assert not missing, f"read by the dashboard or the alert rules, not in /metrics: {missing}"

"""packaging/prometheus/backupmand-rules.yml with the real promtool: it checks, its unit
tests (backupmand-rules.test.yml, synthetic series) pass, every alert has cases where it
fires and where it does not, and those cases really depend on the alert's expression
(an alert broken to never fire, or to always fire, fails them)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.exported_metrics import EXPORTED_METRICS, PROMETHEUS_METRICS, metric_names
from tests.helpers import ROOT

RULES_DIR = ROOT / "packaging" / "prometheus"
RULES = RULES_DIR / "backupmand-rules.yml"
RULE_TESTS = RULES_DIR / "backupmand-rules.test.yml"
PROMTOOL = "/usr/bin/promtool"
ALERTS = ["BackupmandBackupStale", "BackupmandBackupFailed", "BackupmandVerifyFailed",
          "BackupmandNotVerifiedRecently", "BackupmandUploadsFailing", "BackupmandDown"]


def promtool(*args: str | Path, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), "promtool comes with Debian's prometheus package"
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, check=False)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_the_rules_check_and_hold_every_alert_the_spec_names() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert set(ALERTS) <= set(alerts())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == set(alerts()), "each alert has a case where it fires"
    assert quiet == set(alerts()), "each alert has a case where it stays quiet"


def test_the_rules_read_only_metrics_backupmand_exports() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        unknown = metric_names(rule["expr"]) - EXPORTED_METRICS - PROMETHEUS_METRICS - recorded
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_metric_names_reads_selectors_and_skips_everything_else() -> None:
    expr = ('sum by (label, status) (increase(backupmand_verifications_total{result="failed",'
            'instance=~"$instance"}[$__rate_interval])) / on (label) group_left '
            "backupmand_schedule_interval_seconds * 1.5e3 > bool 2 or absent(up{job='x'})")
    assert metric_names(expr) == {"backupmand_verifications_total",
                                  "backupmand_schedule_interval_seconds", "up"}


def mutated(tmp_path: Path, exprs: dict[str, str]) -> Path:
    """A copy of the rules and of the test cases of the alerts in ``exprs`` in tmp_path,
    with those alerts' expressions replaced; returns the copied test file."""
    document = load(RULES)
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in exprs:
                rule["expr"] = exprs[rule["alert"]]
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document, sort_keys=False))
    cases = load(RULE_TESTS)
    # Only the cases that test these alerts: promtool evaluates every rule at every step
    # of every case, and a week of history costs seconds on a busy machine.
    cases["tests"] = [case for case in cases["tests"]
                      if {check["alertname"] for check in case.get("alert_rule_test", [])} & set(exprs)]
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(cases, sort_keys=False))
    return tmp_path / RULE_TESTS.name


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_an_alert_that_never_fires_fails_its_tests(alert: str, tmp_path: Path) -> None:
    tests = mutated(tmp_path, {alert: "vector(1) == 2"})
    result = promtool("test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode != 0, f"the tests did not notice that {alert} can no longer fire"
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_alerts_that_always_fire_fail_their_quiet_cases(tmp_path: Path) -> None:
    tests = mutated(tmp_path, {alert: "vector(1)" for alert in alerts()})
    result = promtool("test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode != 0
    for alert in alerts():
        assert f"alertname: {alert}," in result.stdout + result.stderr, alert

"""Config loading: the valid example, and one file per fault with its message and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_online_eval import ConfigError, load_config, parse_config
from otel_online_eval.rules import ApplyTo
from tests.pki import Pki

DATA = Path(__file__).parent / "testdata" / "config"
ROOT = Path(__file__).parent.parent


def test_valid_config_loads_every_field() -> None:
    cfg = load_config(DATA / "valid.yaml", env={})
    assert [r.name for r in cfg.rules] == ["cat", "everything"]
    cat = cfg.rules[0]
    assert cat.description == "known category"
    assert cat.sampling == 0.25  # from the env default, typed as a number
    assert cat.sampling_seed == 11
    assert cat.apply_to == ApplyTo(root_spans=True, span_names=frozenset({"categorize-message"}))
    assert cat.filter is not None and "output IS NOT NULL" in cat.filter.source
    assert [(u.name, u.sampling) for u in cat.scorers] == [("category", 1.0), ("json", 0.5)]
    assert cfg.scorers["json"].timeout_s == 5
    assert cfg.scorers["category"].type == "one_of"
    assert cfg.rules[1].apply_to.everything
    assert cfg.engine.queue_size == 100 and cfg.engine.threads == 2
    assert cfg.extract.presets == ("genai",)


def test_env_expansion_sets_and_overrides() -> None:
    cfg = load_config(DATA / "valid.yaml", env={"CAT_RATE": "0.75"})
    assert cfg.rules[0].sampling == 0.75


def test_env_cannot_inject_yaml() -> None:
    text = "scorers:\n  s: {type: one_of, values: ['${env:V}']}\nrules: []\n"
    cfg = parse_config(text, env={"V": "a]\nrules: [x"})
    assert cfg.scorers["s"].scorer.score  # the value stayed one string


@pytest.mark.parametrize(
    ("name", "messages"),
    [
        (
            "invalid_sampling.yaml",
            ["invalid_sampling.yaml:5:15: rules[0].sampling: must be between 0 and 1, got 1.5"],
        ),
        (
            "invalid_unknown_key.yaml",
            ["invalid_unknown_key.yaml:5:5: rules[0].samplng: unknown key 'samplng'"],
        ),
        (
            "invalid_scorer_type.yaml",
            [
                "invalid_scorer_type.yaml:3:11: scorers.s.type: unknown value 'vibes'; "
                "expected one of:",
                "valid_json",
            ],
        ),
        (
            "invalid_unknown_scorer.yaml",
            [
                "invalid_unknown_scorer.yaml:5:18: rules[0].scorers[1]: unknown scorer 'missing'; "
                "scorers defined: s"
            ],
        ),
        (
            "invalid_filter.yaml",
            ["invalid_filter.yaml:5:48:", "rules[0].filter: filter does not parse"],
        ),
        (
            "invalid_env.yaml",
            [
                "invalid_env.yaml:2:36: scorers.s.timeout_s: environment variable "
                "OOE_TEST_UNSET_VARIABLE is not set"
            ],
        ),
        (
            "invalid_duplicate_rule.yaml",
            ["invalid_duplicate_rule.yaml:6:11: rules[1].name: duplicate rule name 'r'"],
        ),
        (
            "invalid_python_ref.yaml",
            ["invalid_python_ref.yaml:2:", "scorers.mine.ref", "no_such_package_xyz"],
        ),
        ("invalid_yaml.yaml", ["invalid_yaml.yaml:3:", "not valid YAML"]),
    ],
)
def test_invalid_file_reports_place_and_reason(name: str, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / name, env={})
    text = str(info.value)
    for message in messages:
        assert message in text, text


@pytest.mark.parametrize(
    ("name", "messages"),
    [
        (
            "invalid_tls_missing_file.yaml",
            [
                "invalid_tls_missing_file.yaml:8:23: export.otlp.certificate_file: cannot read '",
                "/no-such-ca.crt': No such file or directory",
            ],
        ),
        (
            "invalid_tls_half_pair.yaml",
            [
                "invalid_tls_half_pair.yaml:8:30: export.otlp.client_certificate_file: needs "
                "client_key_file too: mutual TLS takes both or neither"
            ],
        ),
        (
            "invalid_tls_insecure.yaml",
            [
                "invalid_tls_insecure.yaml:8:15: export.otlp.insecure: true contradicts the TLS "
                "client settings (certificate_file)"
            ],
        ),
        (
            "invalid_tls_http_endpoint.yaml",
            [
                "invalid_tls_http_endpoint.yaml:8:15: forward.otlp.endpoint: "
                "'http://backend:4318' is plaintext, which contradicts the TLS client settings "
                "(certificate_file); use https://"
            ],
        ),
        (
            "invalid_tls_not_pem.yaml",
            [
                "invalid_tls_not_pem.yaml:8:23: export.otlp.certificate_file: no PEM certificate "
                "in '",
                "invalid_tls_not_pem.yaml:10:22: export.otlp.client_key_file: '",
                "server.key' are not a PEM certificate and its unencrypted private key "
                "(KEY_VALUES_MISMATCH)",
            ],
        ),
    ],
)
def test_invalid_tls_files_report_place_and_reason(
    pki: Pki, name: str, messages: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / name, env={"PKI": str(pki.dir)})
    text = str(info.value)
    for message in messages:
        assert message in text, text
    assert len(info.value.issues) == (2 if name == "invalid_tls_not_pem.yaml" else 1), text


def test_tls_files_load(pki: Pki) -> None:
    tls = {
        "certificate_file": str(pki.ca),
        "client_certificate_file": str(pki.client_crt),
        "client_key_file": str(pki.client_key),
    }
    cfg = parse_config({"export": {"otlp": {"endpoint": "https://collector:4317", **tls}}})
    assert cfg.export is not None and cfg.export.otlp is not None
    otlp = cfg.export.otlp
    assert (otlp.certificate_file, otlp.client_certificate_file, otlp.client_key_file) == (
        str(pki.ca),
        str(pki.client_crt),
        str(pki.client_key),
    )


def test_filter_error_points_at_the_column_inside_the_filter() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "invalid_filter.yaml", env={})
    (issue,) = info.value.issues
    # The clause starts at column 14 (after the quote); the missing ')' is at its end.
    assert (issue.line, issue.column) == (5, 14 + len("output IS NOT NULL AND (name = 'x'"))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "invalid_many.yaml", env={})
    text = str(info.value)
    for expected in [
        "2:35: scorers.s.timeout_s: must be at least 0.001, got -1",
        "5:15: rules[0].sampling: must be a number, got 'two'",
        "6:28: rules[0].apply_to.root_spans: must be true or false, got 'yes please'",
        "rules[1]: 'name' is required",
        "9:14: rules[1].scorers: must name at least one scorer",
        "10:1: bogus: unknown key 'bogus'",
    ]:
        assert expected in text, text
    assert len(info.value.issues) == 6


def test_mapping_config_errors_have_paths() -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\].scorers\[0\]: unknown scorer 'x'"):
        parse_config({"scorers": {}, "rules": [{"name": "r", "scorers": ["x"]}]})


def test_validate_command_prints_errors_and_fails() -> None:
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_online_eval.cli",
            "validate",
            "-c",
            str(DATA / "invalid_many.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "6 problems in the configuration" in bad.stderr
    assert "invalid_many.yaml:5:15: rules[0].sampling" in bad.stderr


def test_validate_command_summarises_a_valid_config() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_online_eval.cli",
            "validate",
            "-c",
            str(ROOT / "config" / "rules.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid — 6 rule(s)" in ok.stdout
    assert (
        "scope:      trace; anchored on the trace's root; complete after settle_s 0.2, "
        "idle_s 30, max_wait_s 300; late spans: ignore; incomplete traces: evaluate" in ok.stdout
    )
    assert "rule support-category — The classifier answers with a category we know" in ok.stdout
    assert "applies to: spans named categorize-message" in ok.stdout
    assert (
        "scorers:    not_empty [not_empty], no_pii [pii], answered [refusal], "
        "answer_length [length] at 0.5" in ok.stdout
    )

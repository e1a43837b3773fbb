"""Settings: file lookup, seed keys, precedence, OTEL_* variables and clear errors for bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mltrack_otel.config import load_settings
from mltrack_otel.errors import ConfigError

SEED_FILE = """
llm_tracking_enabled: true
llm_log_prompts: false
llm_log_responses: true
llm_track_token_usage: true
llm_track_costs: true
llm_token_limit_warning: 100000
llm_cost_limit_warning: 10.0
llm_providers:
  openai:
    default_model: gpt-4o-mini
  anthropic:
    default_model: claude-3-haiku-20240307
"""


def write(folder, text):
    path = folder / ".mltrack.yml"
    path.write_text(text)
    return path


def test_every_seed_key_is_read(isolated_env):
    write(isolated_env, SEED_FILE)
    s = load_settings()
    assert s.llm_log_prompts is False and s.capture_prompts is False and s.capture_responses is True
    assert s.llm_token_limit_warning == 100_000
    assert s.llm_cost_limit_warning == Decimal("10.0")
    assert s.default_model("openai") == "gpt-4o-mini"
    assert s.default_model("anthropic") == "claude-3-haiku-20240307"
    assert s.default_model("cohere") is None


def test_file_found_in_a_parent_directory_then_home(isolated_env, monkeypatch, tmp_path_factory):
    project = isolated_env / "project"
    (project / "src" / "pkg").mkdir(parents=True)
    write(project, "llm_log_responses: false\n")
    monkeypatch.chdir(project / "src" / "pkg")
    assert load_settings().llm_log_responses is False

    home = tmp_path_factory.mktemp("home")
    write(home, "llm_track_costs: false\n")
    monkeypatch.setenv("HOME", str(home))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    assert load_settings().llm_track_costs is False


def test_a_typo_is_an_error_naming_file_key_and_suggestion(isolated_env):
    path = write(isolated_env, "llm_log_promts: false\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert str(path) in message and "'llm_log_promts'" in message and "did you mean 'llm_log_prompts'" in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("llm_log_prompts: 'yes please'\n", "llm_log_prompts", "bool"),
        ("llm_token_limit_warning: 'lots'\n", "llm_token_limit_warning", "int"),
        ("llm_token_limit_warning: -5\n", "llm_token_limit_warning", "greater than or equal to 0"),
        ("exporters: [mlflow, zipkin]\n", "exporters.1", "'mlflow'"),
        (
            "llm_providers:\n  openai:\n    default_modle: x\n",
            "llm_providers.openai.default_modle",
            "unknown key",
        ),
        (
            "price_overrides:\n  my-ft: {input_per_mtok: 1}\n",
            "price_overrides.my-ft.output_per_mtok",
            "required",
        ),
        ("redact_patterns: ['(unclosed']\n", "redact_patterns", "invalid regular expression"),
    ],
)
def test_wrong_types_name_the_key_and_what_was_expected(isolated_env, text, key, expected):
    write(isolated_env, text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"'{key}'" in str(info.value)
    assert expected.lower() in str(info.value).lower()


@pytest.mark.parametrize(
    "text",
    ["a: [unclosed\n", "- just\n- a list\n", "a: &x [1]\nb: *x\n"],
    ids=["malformed", "not-a-mapping", "alias"],
)
def test_malformed_files_are_clear_errors(isolated_env, text):
    path = write(isolated_env, text)
    with pytest.raises(ConfigError, match=str(path)):
        load_settings()


def test_yaml_bomb_is_refused_quickly(isolated_env):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    write(isolated_env, bomb)
    with pytest.raises(ConfigError, match="aliases are not allowed"):
        load_settings()


def test_precedence_file_then_otel_env_then_mltrack_env_then_arguments(isolated_env, monkeypatch):
    write(isolated_env, "llm_log_prompts: true\nservice_name: from-file\nllm_cost_limit: 5\n")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    s = load_settings()
    assert s.llm_log_prompts is False and s.service_name == "from-otel" and s.llm_cost_limit == Decimal(5)
    monkeypatch.setenv("MLTRACK_LLM_LOG_PROMPTS", "true")
    monkeypatch.setenv("MLTRACK_LLM_COST_LIMIT", "2.5")
    s = load_settings()
    assert s.llm_log_prompts is True and s.llm_cost_limit == Decimal("2.5")
    assert load_settings(llm_cost_limit=Decimal(1)).llm_cost_limit == Decimal(1)


def test_otel_sdk_disabled_and_otlp_variables(isolated_env, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%3D,x-tenant=t1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    s = load_settings()
    assert s.llm_tracking_enabled is False and s.capture_prompts is False
    assert s.otlp_endpoint == "http://collector:4318" and s.otlp_protocol == "grpc"
    assert s.otlp_headers == {"api-key": "abc=", "x-tenant": "t1"}


@pytest.mark.parametrize("value", ["SPAN_ONLY", "true", "span_and_event"])
def test_newer_capture_content_values_turn_capture_on(isolated_env, monkeypatch, value):
    write(isolated_env, "llm_log_prompts: false\nllm_log_responses: false\n")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert load_settings().capture_prompts is True


def test_bad_environment_values_are_clear_errors(isolated_env, monkeypatch):
    monkeypatch.setenv("MLTRACK_LLM_LOG_PROMPTS", "perhaps")
    with pytest.raises(ConfigError, match="MLTRACK_LLM_LOG_PROMPTS"):
        load_settings()
    monkeypatch.delenv("MLTRACK_LLM_LOG_PROMPTS")
    monkeypatch.setenv("MLTRACK_LLM_LOG_PROMTS", "true")
    with pytest.raises(ConfigError, match="did you mean MLTRACK_LLM_LOG_PROMPTS"):
        load_settings()


def test_env_lists_and_mappings(isolated_env, monkeypatch):
    monkeypatch.setenv("MLTRACK_EXPORTERS", "otlp, mlflow")
    monkeypatch.setenv("MLTRACK_PRICE_OVERRIDES", '{"my-ft": {"input_per_mtok": 1, "output_per_mtok": 2}}')
    s = load_settings()
    assert s.exporters == ("otlp", "mlflow")
    assert s.price_overrides["my-ft"].output_per_mtok == Decimal(2)


def test_unknown_configure_argument_is_an_error(isolated_env):
    with pytest.raises(ConfigError, match="exportrs"):
        load_settings(exportrs=["otlp"])


def test_redactor_compiles_all_patterns_once(isolated_env):
    s = load_settings(redact_patterns=[r"sk-[A-Za-z0-9]{8,}", r"\b\d{16}\b"])
    assert s.redactor is s.redactor
    assert s.redactor.sub("[REDACTED]", "key sk-abcdefghij card 1234567812345678") == "key [REDACTED] card [REDACTED]"


def test_a_broken_file_without_configure_turns_tracking_off_once(isolated_env):
    from mltrack_otel import config, guard

    write(isolated_env, "llm_log_promts: false\n")
    guard.reset()
    config.set_current(None)
    try:
        assert config.current().llm_tracking_enabled is False
        assert config.current() is config.current()  # loaded once, not re-read on every call
        assert guard.health()["errors.config.load"] == 1
    finally:
        config.set_current(None)


@pytest.mark.parametrize(("text", "expected"), [("mlflow", ("mlflow",)), ("'otlp, mlflow'", ("otlp", "mlflow"))])
def test_exporters_may_be_one_string_in_the_file_as_in_the_environment(isolated_env, text, expected):
    write(isolated_env, f"exporters: {text}\n")
    assert load_settings().exporters == expected


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("exporters: [otlp]\nllm_cost_limit: 5\nexporters: [mlflow]\n", "'exporters'", "line 3:"),
        (
            "price_overrides:\n  my-ft: {input_per_mtok: 1, output_per_mtok: 2}\n"
            "  my-ft: {input_per_mtok: 9, output_per_mtok: 9}\n",
            "'my-ft'",
            "line 3:",
        ),
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused_naming_file_key_and_line(isolated_env, text, key, lines):
    path = write(isolated_env, text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert str(path) in message and f"duplicate key {key}" in message and lines in message
    assert "first set on line" in message


def test_an_empty_otel_service_name_counts_as_unset(isolated_env, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "")
    assert load_settings().service_name == "mltrack-otel-app"
    write(isolated_env, "service_name: from-file\n")
    assert load_settings().service_name == "from-file"

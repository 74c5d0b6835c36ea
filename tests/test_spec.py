"""Job spec validation: errors name the line and the field; nothing half-accepted."""

import pytest

from runs.spec import SpecError, parse_spec, phases_of, resolve_parameters, spec_hash
from tests.conftest import DEMO_SPEC

GOOD = """name: demo_job
parameters:
  n:
    type: integer
    default: 3
phases:
  - name: a
    kind: sql
    config:
      sql: select 1
  - name: b
    kind: python
    config:
      callable: sleep
      args: {seconds: 0}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return info.value.errors


def test_demo_spec_is_valid_and_chains_by_default():
    spec = parse_spec(DEMO_SPEC)
    phases = phases_of(spec)
    assert [p.name for p in phases] == ["bronze", "silver", "gold", "quality", "publish"]
    assert phases[0].depends_on == () and phases[1].depends_on == ("bronze",)


def test_unknown_phase_kind_names_line_and_field():
    text = GOOD.replace("kind: python", "kind: sparkk")
    [message] = errors_of(text)
    assert message.startswith("line 12, phases[1].kind:")
    assert "unknown phase kind 'sparkk'" in message and "sql, python" in message


def test_yaml_syntax_error_names_line_and_column():
    [message] = errors_of("name: x\nphases:\n  - name: a\n   kind: sql\n")
    assert message.startswith("line 4, column 4: invalid YAML")


def test_missing_required_field_and_bad_types():
    errors = errors_of("name: x\nphases:\n  - name: a\n    kind: sql\n    retries: many\n    config: {sql: select 1}\n")
    assert errors == ["line 5, phases[0].retries: 'many' is not of type 'integer'"]
    assert errors_of("description: no name\n") == ["line 1, (top level): 'name' is a required property",
                                                    "line 1, (top level): 'phases' is a required property"]


def test_semantic_errors_unknown_dependency_cycle_config_and_default():
    text = GOOD.replace("    config:\n      sql: select 1", "    depends_on: [zz]\n    config:\n      sql: select 1")
    assert errors_of(text) == ["line 9, phases[0].depends_on: unknown phase 'zz'"]
    cyc = GOOD.replace("  - name: a\n    kind: sql", "  - name: a\n    depends_on: [b]\n    kind: sql")
    assert errors_of(cyc) == ["line 7, phases: depends_on forms a cycle"]
    bad_default = GOOD.replace("default: 3", "default: three")
    assert errors_of(bad_default) == ["line 5, parameters.n.default: parameter n must be an integer, not 'three'"]
    no_callable = GOOD.replace("callable: sleep", "callable: os.system")
    [message] = errors_of(no_callable)
    assert message.startswith("line 14, phases[1].config: no registered callable 'os.system'")
    assert errors_of(GOOD.replace("sql: select 1", "sql: ''")) == [
        "line 10, phases[0].config: sql phases need a non-empty 'sql' string"]


def test_reserved_parameter_names_are_refused():
    text = GOOD.replace("  n:\n", "  run_id:\n")
    assert errors_of(text) == ["line 4, parameters.run_id: 'run_id' is reserved (it is set for every run)"]


def test_spec_hash_ignores_formatting_but_not_content():
    a = parse_spec(GOOD)
    b = parse_spec(GOOD.replace("args: {seconds: 0}", "args:\n        seconds: 0"))
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(parse_spec(GOOD.replace("select 1", "select 2")))


def test_resolve_parameters_types_defaults_and_errors():
    spec = parse_spec(DEMO_SPEC)
    assert resolve_parameters(spec, {"min_amount": "10.5"}) == {"source_file": "orders.csv", "min_amount": 10.5}
    assert resolve_parameters(spec, {"min_amount": "7"})["min_amount"] == 7  # stays an integer
    with pytest.raises(SpecError) as info:
        resolve_parameters(spec, {"min_amount": "lots", "nope": 1})
    assert info.value.errors == ["unknown parameter(s): nope", "parameter min_amount must be a number, not 'lots'"]


def test_yaml_alias_bombs_are_refused_quickly():
    bomb = "name: x\nphases:\n  - name: a\n    kind: python\n    config:\n      callable: sleep\n      args:\n"
    bomb += "        a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb += f"        {level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    assert errors_of(bomb) == ["line 9: YAML aliases (*name) are not allowed in job specs"]
    assert errors_of("name: x\n" + "#" * (300 * 1024)) == ["the spec is larger than 256 KiB"]

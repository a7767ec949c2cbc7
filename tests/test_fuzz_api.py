"""schemathesis against the app's own OpenAPI schema, over real HTTP on the mock device.

Every operation gets a bounded number of generated requests, valid ones and invalid
ones (derandomized: the same cases on every run), with a valid admin token; every
response must be a non-5xx whose status code, content type and body the schema
declares. A second pass sends each operation without a token and with a bad one:
401, as declared. All failures are gathered and reported together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from llmos.api import create_app
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.params import Settings
from tests._live_server import serving

TOKEN = "fuzz-admin-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 10}


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        derandomize=True,  # the same cases every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate),  # no shrinking: failures are gathered
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz")
    device = MockDevice(slots=4, context_length=256)
    kernel = Kernel(Settings(home=home, admin_token=TOKEN, max_body_bytes=64 * 1024), [device])
    with serving(create_app(kernel)) as base:
        yield base


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _operations(url: str) -> list[Any]:
    spec = requests.get(url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(op: Any, mode: GenerationMode, run: Any) -> list[str]:
    failures: list[str] = []

    @given(case=op.as_strategy(generation_mode=mode))
    @_settings(EXAMPLES[mode])
    def one(case: schemathesis.Case) -> None:
        run(case)

    try:
        one()
    except Unsatisfiable:  # nothing to make invalid (no parameters, any string is valid)
        pass
    except (
        Exception,
        BaseExceptionGroup,
    ) as exc:  # gather: report every operation's first failure at once
        failures.append(f"{op.method.upper()} {op.path} ({mode}): {exc}"[:3000])
    return failures


def _aim(case: schemathesis.Case) -> None:
    """Half the LLM requests name the served model, so they are answered, not 404'd."""
    body, path = case.body, case.path_parameters or {}
    if isinstance(body, dict) and isinstance(body.get("model"), str) and len(repr(body)) % 2:
        body["model"] = "mock"
    if "model_id" in path and len(repr(path)) % 2:
        path["model_id"] = "mock"


def test_no_5xx_and_responses_match_the_schema(url: str, http: requests.Session) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def run(case: schemathesis.Case) -> None:
        _aim(case)
        case.call_and_validate(base_url=url, session=http, headers=auth, checks=CHECKS, timeout=30)

    failures = []
    for op in _operations(url):
        for mode in EXAMPLES:
            failures += _fuzz(op, mode, run)
    assert not failures, "\n\n".join(failures[:20])


@pytest.mark.parametrize("header", ["", "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
def test_every_v1_operation_wants_a_valid_token(
    url: str, http: requests.Session, header: str
) -> None:
    def run(case: schemathesis.Case) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call(base_url=url, session=http, headers={"Authorization": header})
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert response.json()["error"]["type"] == "authentication_error"
        case.validate_response(response, checks=CHECKS)

    checked = 0
    for op in _operations(url):
        if not op.path.startswith("/v1/"):
            continue

        @given(case=op.as_strategy())
        @_settings(3)
        def one(case: schemathesis.Case) -> None:
            run(case)

        one()
        checked += 1
    assert checked >= 30


def test_the_schema_declares_the_real_errors(url: str) -> None:
    spec = requests.get(url + "/openapi.json", timeout=10).json()
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert "422" not in codes, (method, path)  # validation errors are 400s
            if path.startswith("/v1/"):
                assert {"400", "401", "404", "413", "429", "431"} <= codes, (method, path)
                assert "Retry-After" in op["responses"]["429"]["headers"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    assert spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }

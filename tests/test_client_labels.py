"""The agent's labels (--label, the labels file, remembered) and `down --leave`, under
dash with the fakes of tests/test_client_agent.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_client_agent import DASH, Agent, answer, one_sentence

pytestmark = pytest.mark.skipif(
    DASH is None, reason="the agent is tested with dash (apt install dash)"
)


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def ping_bodies(agent: Agent) -> list[dict[str, object]]:
    return [json.loads(body) for kind, _, body in agent.requests() if kind == "ping"]


def test_labels_from_the_command_line_and_the_file_are_merged(agent: Agent, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("# contest floor\nsite = ucf\nroom=B 12\n\nteam=7\r\n")
    result = agent.up("--label", "team=42", "--label", 'quote=a"b\\c', "--labels-file", str(labels))
    assert result.code == 0, result.stderr
    assert ping_bodies(agent) == [
        {
            "hostname": "test-host",
            "labels": {"site": "ucf", "room": "B 12", "team": "42", "quote": 'a"b\\c'},
        }
    ]


def test_a_later_ping_keeps_the_labels_of_the_last_up(agent: Agent, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("site=ucf\n")
    agent.queue("ping", answer(200, {"status": "ok"}), answer(200, {"status": "ok"}))
    assert agent.up("--label", "team=42", "--labels-file", str(labels)).code == 0
    labels.write_text("site=mit\n")  # the file is read at every run
    agent.clear_logs()
    assert agent.run("ping").code == 0
    assert ping_bodies(agent) == [
        {"hostname": "test-host", "labels": {"site": "mit", "team": "42"}}
    ]
    assert "label=team=42" in agent.state.read_text()


def test_labels_that_went_away_are_cleared_once(agent: Agent) -> None:
    agent.queue("ping", *[answer(200, {"status": "ok"})] * 3)
    assert agent.up("--label", "team=42").code == 0
    agent.state.write_text(
        "\n".join(line for line in agent.state.read_text().splitlines() if "label=" not in line)
        + "\nlabels_sent=yes\n"
    )
    agent.clear_logs()
    assert agent.run("ping").code == 0
    assert agent.run("ping").code == 0
    assert ping_bodies(agent) == [
        {"hostname": "test-host", "labels": {}},
        {"hostname": "test-host"},
    ]


def test_no_labels_means_no_labels_field(agent: Agent) -> None:
    assert agent.up().code == 0
    assert ping_bodies(agent) == [{"hostname": "test-host"}]


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("site", "'site' is not KEY=VALUE"),
        ("Site=x", "the label key 'Site'"),
        ("fleet=x", "the label key 'fleet'"),
        ("__x=1", "the label key '__x'"),
        ("site=a\tb", "holds control characters"),
    ],
)
def test_bad_labels_are_usage_errors(agent: Agent, label: str, problem: str) -> None:
    result = agent.up("--label", label)
    assert result.code == 2
    assert problem in one_sentence(result.stderr)
    assert agent.requests() == []


def test_a_bad_line_in_the_labels_file_is_named(agent: Agent, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("site=ucf\nnonsense\n")
    result = agent.up("--labels-file", str(labels))
    assert result.code == 2
    assert f"{labels} line 2: 'nonsense' is not KEY=VALUE" in one_sentence(result.stderr)


def test_more_than_16_labels_are_refused(agent: Agent) -> None:
    argv = [arg for n in range(17) for arg in ("--label", f"k{n}=v")]
    result = agent.up(*argv)
    assert result.code == 2
    assert "17 labels given; at most 16" in one_sentence(result.stderr)


def test_down_leave_tells_the_server_then_takes_the_tunnel_down(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.queue("other", answer(200, {"status": "left"}))
    agent.clear_logs()
    result = agent.run("down", "--leave")
    assert result.code == 0, result.stderr
    assert result.stdout == "wg-fleet-client: wt0 left fleet south.\n"
    assert agent.requests() == [["other", "http://[fd00::1]:8000/fleet/south/leave", "{}"]]
    assert agent.tunnel_calls() == ["wg-quick down wt0"]
    assert not agent.is_up()


def test_down_leave_brings_a_downed_tunnel_up_to_leave(agent: Agent) -> None:
    assert agent.up().code == 0
    assert agent.run("down").code == 0
    agent.queue("other", answer(404, {"detail": "No client."}))
    agent.clear_logs()
    result = agent.run("down", "--leave")
    assert result.code == 0, result.stderr
    assert "no longer knew wt0" in result.stdout
    assert agent.tunnel_calls() == ["wg-quick up wt0", "wg-quick down wt0"]


def test_a_failed_leave_still_takes_the_tunnel_down(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.queue("other", "000 ")
    result = agent.run("down", "--leave")
    assert result.code == 1
    assert "could not tell the server at http://[fd00::1]:8000/fleet/south/leave" in (
        one_sentence(result.stderr)
    )
    assert not agent.is_up()


def test_leave_without_an_enrollment_says_so(agent: Agent) -> None:
    result = agent.run("down", "--leave")
    assert result.code == 1
    assert "never brought up" in one_sentence(result.stderr)


def test_leave_is_an_option_of_down_only(agent: Agent) -> None:
    result = agent.up("--leave")
    assert result.code == 2
    assert "--leave is an option of down only" in one_sentence(result.stderr)
    assert agent.run("down", "--label", "a=b").code == 2


def test_under_systemd_the_tunnel_scope_stops_after_the_service(agent: Agent) -> None:
    """At shutdown the service's `down --leave` must still find the tunnel up."""
    assert agent.up(env={"INVOCATION_ID": "0123"}).code == 0
    (scope,) = [line for line in agent.log() if line.startswith("systemd-run")]
    assert "--property=Before=wg-fleet-client.service" in scope.split()

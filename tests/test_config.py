"""Settings read from the environment: defaults, values, and clear refusals."""

import re
from pathlib import Path

import pytest

from api.access import Caller, key_line, new_key
from api.contract import Role
from api.settings import ApiSettings
from config import ConfigError, temporal_connect_config
from providers import ProviderSettings
from run_worker import WorkerSettings
from shared import Leg
from simulated.faults import ProviderFaults, Simulation


def test_defaults_match_the_tutorial() -> None:
    assert ApiSettings.from_env({}) == ApiSettings(host="127.0.0.1", port=3000)
    assert ApiSettings.from_env({}).booking_deadline_seconds == 300
    assert Simulation.from_env({}) == Simulation(latency_seconds=0.0, hotel_outage=True)
    assert temporal_connect_config({})["target_host"] == "localhost:7233"


def test_values_are_read_from_the_environment() -> None:
    env = {
        "HOST": "0.0.0.0",
        "ALLOW_ANONYMOUS": "1",
        "PORT": "8080",
        "SIM_LATENCY_SECONDS": "0.25",
        "SIM_HOTEL_OUTAGE": "0",
        "TEMPORAL_ADDRESS": "temporal.internal:7233",
        "TEMPORAL_NAMESPACE": "bookings",
        "BOOKING_DEADLINE_SECONDS": "60",
    }
    assert ApiSettings.from_env(env) == ApiSettings(
        host="0.0.0.0", port=8080, booking_deadline_seconds=60
    )
    assert Simulation.from_env(env) == Simulation(latency_seconds=0.25, hotel_outage=False)
    connect = temporal_connect_config(env)
    assert (connect["target_host"], connect["namespace"]) == ("temporal.internal:7233", "bookings")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "http"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("BOOKING_DEADLINE_SECONDS", "0"),
        ("BOOKING_DEADLINE_SECONDS", "3601"),
        ("BOOKING_DEADLINE_SECONDS", "1.5"),
        ("TEMPORAL_TASK_QUEUE", 'saga" OR "x'),
        ("TEMPORAL_TASK_QUEUE", ""),
        ("SIM_LATENCY_SECONDS", "slow"),
        ("SIM_LATENCY_SECONDS", "-1"),
        ("SIM_LATENCY_SECONDS", "6"),
        ("SIM_HOTEL_OUTAGE", "yes"),
        ("SIM_HOTEL_LOST_REPLY_RATE", "1.5"),
        ("SIM_CAR_STOCK", "-1"),
        ("SIM_SEED", "x"),
        pytest.param("ALLOW_ANONYMOUS", "yes", id="ALLOW_ANONYMOUS-yes"),
        pytest.param("API_KEYS_FILE", "/nonexistent/api-keys.txt", id="API_KEYS_FILE-missing"),
        pytest.param("HOST", "0.0.0.0", id="HOST-every-interface-without-keys"),
    ],
)
def test_unusable_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    api = variable in (
        "PORT",
        "BOOKING_DEADLINE_SECONDS",
        "TEMPORAL_TASK_QUEUE",
        "HOST",
        "API_KEYS_FILE",
        "ALLOW_ANONYMOUS",
    )
    read = ApiSettings.from_env if api else WorkerSettings.from_env
    with pytest.raises(ConfigError, match=variable):
        read({variable: value})


def test_faults_are_read_per_provider() -> None:
    env = {
        "SIM_HOTEL_OUTAGE_RATE": "0.1",
        "SIM_HOTEL_LOST_REPLY_RATE": "0.2",
        "SIM_CAR_REJECT_RATE": "0.05",
        "SIM_FLIGHT_LATENCY_SECONDS": "0.5",
        "SIM_FLIGHT_STOCK": "3",
        "SIM_SEED": "7",
        "TEMPORAL_TASK_QUEUE": "saga-blue",
        "PROVIDERS_DIR": "/var/lib/providers",
    }
    settings = WorkerSettings.from_env(env)
    simulation = settings.providers.simulation

    assert simulation.of(Leg.HOTEL) == ProviderFaults(outage_rate=0.1, lost_reply_rate=0.2)
    assert simulation.of(Leg.CAR) == ProviderFaults(reject_rate=0.05)
    assert simulation.of(Leg.FLIGHT) == ProviderFaults(latency_seconds=0.5, stock=3)
    assert simulation.seed == 7
    assert settings.task_queue == "saga-blue"
    assert str(settings.providers.directory) == "/var/lib/providers"


def test_a_worker_given_the_providers_url_serves_none_of_its_own() -> None:
    settings = WorkerSettings.from_env(
        {"PROVIDERS_URL": "http://providers.internal:3001", "SIM_CAR_REJECT_RATE": "not read"}
    )

    assert settings.providers_url == "http://providers.internal:3001"
    assert settings.providers == ProviderSettings()
    assert settings.ignored == ("SIM_CAR_REJECT_RATE",)  # said at start, as not read


@pytest.mark.parametrize(
    "url",
    [
        "providers.internal:3001",
        "ftp://providers",
        "http://",
        "http://providers:abc",
        "http://providers:99999",
        "http://providers:3001?x=1",
    ],
)
def test_a_providers_url_that_is_no_http_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="PROVIDERS_URL must be an http"):
        WorkerSettings.from_env({"PROVIDERS_URL": url})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVIDERS_PORT": "http"}, "PROVIDERS_PORT must be a number, not 'http'"),
        ({"PROVIDERS_PORT": "70000"}, "PROVIDERS_PORT must be between 0 and 65535, not '70000'"),
    ],
)
def test_a_bad_providers_port_is_refused_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProviderSettings.from_env(env)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        pytest.param({"HOST": "0.0.0.0"}, "API_KEYS_FILE", id="names_the_key_file"),
        pytest.param({"HOST": "0.0.0.0"}, "ALLOW_ANONYMOUS=1", id="names_the_way_to_allow_it"),
        pytest.param(
            {"HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "0"},
            "HOST='0.0.0.0' is not a loopback",
            id="zero",
        ),
        pytest.param(
            {"HOST": "127.0.0.1 "}, "HOST='127.0.0.1 ' is not a loopback", id="a_space_after"
        ),
        pytest.param(
            {"HOST": "127.0.0.1", "API_KEYS_FILE": ""},
            "API_KEYS_FILE is set but empty",
            id="empty_key_file_even_on_loopback",
        ),
        pytest.param(
            {"API_KEYS_FILE": "/nonexistent/api-keys.txt"},
            "/nonexistent/api-keys.txt",
            id="names_the_missing_path",
        ),
    ],
)
def test_an_api_open_to_other_machines_or_a_missing_key_file_is_refused_saying_why(
    env: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        ApiSettings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "1"}, id="every_interface_allowed"),
        pytest.param({}, id="default_host"),
        pytest.param({"HOST": "127.0.0.1"}, id="ipv4_loopback"),
        pytest.param({"HOST": "::1"}, id="ipv6_loopback"),
        pytest.param({"HOST": "localhost", "ALLOW_ANONYMOUS": "0"}, id="localhost"),
    ],
)
def test_without_a_key_file_the_api_is_open_where_that_is_safe_or_meant(
    env: dict[str, str],
) -> None:
    assert ApiSettings.from_env(env).api_keys is None


def test_a_key_file_makes_the_api_take_its_keys_on_any_host(tmp_path: Path) -> None:
    key = new_key()
    keys_file = tmp_path / "api-keys.txt"
    keys_file.write_text(key_line("alice", Role.CLIENT, key) + "\n", encoding="utf-8")

    settings = ApiSettings.from_env({"HOST": "0.0.0.0", "API_KEYS_FILE": str(keys_file)})

    assert settings.api_keys is not None
    assert settings.api_keys.caller(key) == Caller("alice", Role.CLIENT)

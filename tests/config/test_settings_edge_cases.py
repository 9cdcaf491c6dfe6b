"""Issue 5 hardening of celora_cli.config.settings: passwords with unencoded / ? #, linear masking, URL limits, host
handling, startup-option escaping, strict env files, one timeout validator, the project root.

No database, no network. Every load_settings() call passes environ= and project_root= explicitly.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from sqlalchemy.engine import make_url

from celora_cli.config.settings import (
    CONNECT_TIMEOUT_LIMITS,
    HEALTH_TIMEOUT_LIMITS,
    LOCK_TIMEOUT_LIMITS,
    MAX_URL_LENGTH,
    STATEMENT_TIMEOUT_LIMITS,
    Settings,
    find_project_root,
    load_settings,
    mask_url,
    parse_database_url,
    redact,
    validate_seconds,
)
from celora_cli.errors import ConfigError, ExitCode

SECRET = "Secr3tPart"


def assert_hidden(text: str, password: str) -> None:
    """No piece of the password that could identify it (its marker, or itself) is in `text`."""
    assert SECRET not in text, text
    assert password not in text, text


def parse_or_error(url: str, setting: str = "DATABASE_URL"):
    try:
        return parse_database_url(url, setting), None
    except ConfigError as exc:
        return None, exc


# --------------------------------------------------------------------------- 1. passwords with / ? #


def test_issue_examples_never_show_the_password():
    for url, secret in [("postgresql://app:Pw0rdX/Secr3tPart@db.example.com:5432/celora", "Secr3tPart"),
                        ("postgresql://app:1234/Secr3tNum@db.example.com:5432/celora", "Secr3tNum")]:
        masked = mask_url(url)
        assert masked == "postgresql://app:****@db.example.com:5432/celora"
        _, error = parse_or_error(url)
        assert error is not None and error.exit_code == ExitCode.CONFIG
        assert secret not in error.message + error.hint
        assert "Pw0rdX" not in error.message and "1234" not in error.message
        assert "postgresql://app:****@db.example.com:5432/celora" in error.message
        for encoding in ("/ as %2F", "? as %3F", "# as %23"):
            assert encoding in error.hint


SPECIALS = "/?#@:%&=+ $!*'()[];,~`^{}|\\\"<>"
TAILS = ["", "?sslmode=require", "?options=-c%20x=a@b", "?application_name=me@laptop&sslmode=require", "#frag"]
HOSTS = ["db.example.com:5432", "db", "[2001:db8::1]:5433", "%2Fvar%2Frun%2Fpostgresql"]


def _passwords():
    """Property-style: every special character, alone and in pairs, at the start, middle and end."""
    for char in SPECIALS:
        yield f"{char}{SECRET}", f"Pw{char}{SECRET}", f"{SECRET}{char}", f"12{char}{SECRET}{char}x"
    for first, second in itertools.product("/?#@", repeat=2):
        yield f"a{first}{SECRET}{second}b", f"1{first}2{second}{SECRET}"
    yield f"?options={SECRET}", f"x/{SECRET}?application_name=me"


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("host", HOSTS)
def test_no_password_shape_leaks_from_mask_parse_or_redact(host, tail):
    checked = 0
    for group in _passwords():
        for password in ([group] if isinstance(group, str) else group):
            url = f"postgresql://app:{password}@{host}/celora{tail}"
            if " " not in password:  # in free text a URL ends at whitespace; see the test below
                assert_hidden(mask_url(url), password)
                assert_hidden(redact(f"connection to ({url}) failed: boom"), password)
                assert_hidden(mask_url(f"DATABASE_URL={url} and more text"), password)
            parsed, error = parse_or_error(url)
            if error is not None:
                assert error.exit_code == ExitCode.CONFIG
                assert_hidden(error.message + error.hint, password)
            else:
                # Parsed: then it was read as written (the password is the password), and masked.
                assert parsed.password == unquote(password)
                assert_hidden(parsed.masked, password)
            checked += 1
    assert checked >= 150


@pytest.mark.parametrize("char,encoded", [("/", "%2F"), ("?", "%3F"), ("#", "%23"), ("@", "%40"), ("%", "%25"),
                                          (" ", "%20"), (":", "%3A")])
def test_percent_encoded_special_characters_parse_to_the_real_password(char, encoded):
    parsed = parse_database_url(f"postgresql://app:a{encoded}{SECRET}@db:5432/celora")
    assert parsed.password == f"a{char}{SECRET}"
    assert make_url(parsed.sqlalchemy_url()).password == f"a{char}{SECRET}"
    assert parsed.masked == "postgresql://app:****@db:5432/celora"


@pytest.mark.parametrize("char", "/?#")
def test_unencoded_delimiter_in_password_is_refused_with_the_encoding_hint(char):
    with pytest.raises(ConfigError) as info:
        parse_database_url(f"postgresql://app:x{char}{SECRET}@db:5432/celora", "DIRECT_DATABASE_URL")
    assert info.value.message.startswith("DIRECT_DATABASE_URL has an '@' after a '/', '?' or '#'")
    assert "percent-encode" in info.value.hint.lower()
    assert SECRET not in info.value.message + info.value.hint


def test_at_in_a_libpq_query_value_does_not_move_the_host():
    assert (mask_url("postgresql://app:pw1@db/celora?options=a@b")
            == "postgresql://app:****@db/celora?options=a@b")
    assert (mask_url("postgresql://app:pw1@db/celora?sslmode=require&application_name=me@laptop")
            == "postgresql://app:****@db/celora?sslmode=require&application_name=me@laptop")
    parsed = parse_database_url("postgresql://app:pw1@db/celora?options=a@b")
    assert (parsed.password, parsed.host, parsed.libpq_param("options")) == ("pw1", "db", "a@b")
    unmasked = "postgresql://db:5432/celora?application_name=me@laptop"
    assert mask_url(unmasked) == unmasked


def test_at_in_an_unknown_parameter_or_the_path_is_taken_as_the_end_of_a_password():
    # Nothing can tell 'app:1234/x@db' (a password with '/') from host 'app', port 1234 and database 'x@db':
    # the safe reading hides it, and the parser refuses it with the encoding hint.
    assert mask_url("postgresql://app:1234/x@db/celora") == "postgresql://app:****@db/celora"
    assert mask_url("postgresql://app:1234?zz=x@db/celora") == "postgresql://app:****@db/celora"
    with pytest.raises(ConfigError) as info:
        parse_database_url("postgresql://db:5432/me@home")
    assert "the database name or a parameter holds an unencoded '@'" in info.value.message
    assert "%40" in info.value.hint


def test_password_running_into_a_known_parameter_is_still_hidden():
    # ':' then no port: the authority is not host:port, so everything up to the last '@' is the password.
    masked = mask_url(f"postgresql://app:Pw?options={SECRET}@db/celora")
    assert SECRET not in masked and masked == "postgresql://app:****@db/celora"


def test_space_in_password_is_hidden_in_parse_errors_and_masked_property():
    # In free text a URL ends at whitespace, so mask_url cannot see the rest of such a password; celora never
    # puts a raw URL in a message (it shows DatabaseURL.masked, which masks the URL as a whole), and the CLI
    # also scrubs every known password (Settings.secrets) from all output.
    assert redact(f"postgresql://app:my {SECRET}@db/celora", [f"my {SECRET}", SECRET]).count(SECRET) == 0
    url = f"postgresql://app:my {SECRET}@db:notaport/celora"
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert SECRET not in info.value.message
    parsed = parse_database_url(f"postgresql://app:my {SECRET}@db:5432/celora")
    assert parsed.password == f"my {SECRET}"
    assert parsed.masked == "postgresql://app:****@db:5432/celora"


def test_urlsplit_error_text_is_never_echoed():
    # urlsplit's NFKC check repeats the whole netloc, password included, in its message.
    url = f"postgresql://app:{SECRET}\uff03x@db/celora"
    _, error = parse_or_error(url)
    assert error is not None
    assert SECRET not in error.message + error.hint
    assert "normalisation" in error.message


def test_non_utf8_percent_encoding_in_password_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as info:
        parse_database_url(f"postgresql://app:{SECRET}%FF@db/celora")
    assert "not UTF-8" in info.value.message
    assert SECRET not in info.value.message


# --------------------------------------------------------------------------- 2. linear masking, URL length


# Each builds a text of about 1 MB. The old masking regex tried a scheme at every letter: quadratic, and a C
# loop that holds the GIL, so neither pytest-timeout method could stop it. Each case therefore runs in a
# child process that subprocess.run kills: the test fails cleanly instead of hanging the run.
ADVERSARIAL = {
    "letters": "'a' * 1_000_000",
    "scheme_then_letters": "'postgresql://' + 'a' * 1_000_000",
    "many_schemes": "'a://' * 250_000",
    "many_ats": "'postgresql://u:' + '@' * 1_000_000",
    "query_ats": "'postgresql://u:p@h/db?options=' + '@' * 1_000_000",
    "query_pieces": "'postgresql://h/db?' + 'options=a@b&' * 90_000",
    "colons": "'postgresql://' + ':' * 1_000_000 + '@h'",
    "long_key_ats": "'postgresql://h/db?' + 'k' * 500_000 + '=' + '@' * 500_000",
    "password_params": "'password=x ' * 100_000",
    "secret_params": "'postgresql://h/db?' + 'sslpassword=x&' * 90_000",
    "long_encoded_names": "'&' + '%25' * 300_000 + 'password=x ' + 'k' * 100_000",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_masking_a_megabyte_completes(name):
    script = ("from celora_cli.config.settings import mask_url, redact\n"
              f"text = {ADVERSARIAL[name]}\n"
              "masked = redact(mask_url(text), ['hunter22'])\n"
              "assert 'password=x' not in masked\n"
              "print(len(text), len(masked))\n")
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                              cwd=Path(__file__).resolve().parents[2], check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"masking the {name!r} megabyte did not finish in 30 s")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) >= 1_000_000


@pytest.mark.timeout(10)
def test_masking_a_megabyte_still_hides_every_password():
    urls = [f"postgresql://app:pw{i}/{SECRET}@db{i}:5432/celora?options=a@b" for i in range(20_000)]
    text = " ".join(urls)
    assert len(text) > 1_000_000
    masked = mask_url(text)
    assert SECRET not in masked
    assert masked.count(":****@db") == 20_000


def test_too_long_url_is_refused_naming_the_setting(tmp_path):
    url = "postgresql://app:pw@db/celora?application_name=" + "x" * MAX_URL_LENGTH
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DIRECT_DATABASE_URL": url}, project_root=tmp_path)
    assert info.value.message.startswith("DIRECT_DATABASE_URL is")
    assert "8,192" in info.value.message
    assert "pw@" not in info.value.message  # not echoed at all
    assert parse_database_url("postgresql://app:pw@db/c?application_name=" + "x" * 8000).host == "db"


# --------------------------------------------------------------------------- 3. hosts


def test_percent_encoded_socket_directory_host():
    parsed = parse_database_url("postgresql://user@%2Fvar%2Frun%2Fpostgresql/db")
    assert parsed.host == "/var/run/postgresql"
    assert parsed.is_socket
    assert parsed.display_host == "/var/run/postgresql/.s.PGSQL.5432"
    sa = make_url(parsed.sqlalchemy_url())
    assert sa.query["host"] == "/var/run/postgresql"
    assert (sa.username, sa.database) == ("user", "db")


def test_socket_directory_with_port_and_password():
    parsed = parse_database_url("postgresql://u:pw@%2Ftmp%2FSock%20Dir:6543/db?sslmode=disable")
    assert (parsed.host, parsed.port, parsed.password) == ("/tmp/Sock Dir", 6543, "pw")
    sa = make_url(parsed.sqlalchemy_url())
    assert (sa.port, sa.query["host"], sa.query["sslmode"]) == (6543, "/tmp/Sock Dir", "disable")
    assert parsed.masked == "postgresql://u:****@%2Ftmp%2FSock%20Dir:6543/db?sslmode=disable"


def test_host_names_keep_their_case():
    parsed = parse_database_url("postgresql://u:pw@MyDB.Example.COM:5432/db")
    assert parsed.host == "MyDB.Example.COM"
    assert parsed.display_host == "MyDB.Example.COM:5432"
    assert make_url(parsed.sqlalchemy_url()).host == "MyDB.Example.COM"


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "db..example.com", "x" * 64])
@pytest.mark.parametrize("setting", ["DATABASE_URL", "DIRECT_DATABASE_URL"])
def test_bad_host_labels_are_config_errors_naming_the_setting(tmp_path, host, setting):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={setting: f"postgresql://u:{SECRET}@{host}:5432/db"}, project_root=tmp_path)
    assert info.value.message.startswith(f"{setting} has an invalid host name")
    assert "63 characters" in info.value.message
    assert SECRET not in info.value.message + info.value.hint


def test_63_character_label_is_fine():
    assert parse_database_url(f"postgresql://u@{'a' * 63}.example.com/db").host.startswith("a" * 63)


@pytest.mark.parametrize("setting", ["DATABASE_URL", "DIRECT_DATABASE_URL"])
def test_non_utf8_bytes_in_url_are_a_config_error_naming_the_setting(tmp_path, setting):
    undecodable = b"postgresql://u:pw@db/caf\xe9".decode("utf-8", "surrogateescape")  # as os.environ has it
    with pytest.raises(ConfigError) as info:
        load_settings(environ={setting: undecodable}, project_root=tmp_path)
    assert info.value.message == f"{setting} contains bytes that are not UTF-8 text."
    assert "%C3%A9" in info.value.hint


def test_non_utf8_pg_user_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="^CELORA_PG_USER contains bytes that are not UTF-8"):
        load_settings(environ={"CELORA_PG_USER": "p\udce9"}, project_root=tmp_path)


def test_ipv6_zone_and_literal_not_idna_checked():
    parsed = parse_database_url("postgresql://u@[fe80::1%25eth0]:5432/db")
    assert parsed.host == "fe80::1%eth0"


# --------------------------------------------------------------------------- 4. startup options


def split_like_postgres(options: str) -> list[str]:
    """PostgreSQL's pg_split_opts: whitespace separates arguments unless a backslash escapes it."""
    args, current, escaped, started = [], [], False, False
    for char in options:
        if char.isspace() and not escaped:
            if started:
                args.append("".join(current))
            current, started = [], False
            continue
        started = True
        if char == "\\" and not escaped:
            escaped = True
            continue
        current.append(char)
        escaped = False
    if started:
        args.append("".join(current))
    return args


@pytest.mark.parametrize("schema", ["my schema", "App", 'we"ird', "back\\slash", "tab\there", "plain"])
def test_startup_options_survive_the_servers_split(tmp_path, schema):
    from celora_cli.db.engine import connect_args

    url = parse_database_url(f"postgresql://u@h/db?schema={quote(schema, safe='')}")
    assert url.schema == schema
    options = connect_args(url, Settings(project_root=tmp_path), application_name="t")["options"]
    args = split_like_postgres(options)
    quoted = '"' + schema.replace('"', '""') + '"'
    assert args == ["-c", "celora.direct_session=on", "-c", "statement_timeout=30000", "-c",
                    f"search_path={quoted}"]


def test_schema_with_space_is_escaped_as_the_issue_asks(tmp_path):
    from celora_cli.db.engine import connect_args

    url = parse_database_url("postgresql://u@h/db?schema=my%20schema")
    options = connect_args(url, Settings(project_root=tmp_path, statement_timeout=0), application_name="t")
    assert options["options"] == '-c celora.direct_session=on -c search_path="my\\ schema"'


# --------------------------------------------------------------------------- 5. env files


def test_non_utf8_env_file_is_a_config_error_naming_the_file(tmp_path):
    env_file = tmp_path / "latin1.env"
    env_file.write_bytes("CELORA_ENV=test\nNAME=caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, project_root=tmp_path, env_file=env_file)
    assert str(env_file) in info.value.message
    assert "not UTF-8" in info.value.message and "line 2" in info.value.message
    assert "UTF-8" in info.value.hint


def test_non_utf8_project_dotenv_is_a_config_error_naming_the_file(tmp_path):
    (tmp_path / ".env").write_bytes(b"\xff\xfeD\x00B\x00")  # UTF-16, a common editor choice on Windows
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, project_root=tmp_path)
    assert str(tmp_path / ".env") in info.value.message
    assert info.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize("implicit", [False, True])
def test_unterminated_quote_is_a_config_error_with_file_and_line(tmp_path, implicit):
    content = ("# staging\nCELORA_ENV=staging\n\n\n"
               f'DATABASE_URL="postgresql://app:{SECRET}@prod-db:5432/celora\n'
               "CELORA_LOCK_TIMEOUT=5\n")
    env_file = tmp_path / (".env" if implicit else ".env.staging")
    env_file.write_text(content)
    environ = {"DATABASE_URL": "postgresql://app:other@dev-db/celora"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, project_root=tmp_path, env_file=None if implicit else env_file)
    message = info.value.message
    assert str(env_file) in message
    assert "line 5" in message, message
    assert "DATABASE_URL" in message
    assert SECRET not in message + info.value.hint
    assert "quote" in info.value.hint


@pytest.mark.parametrize("line", ["NOT A SETTING LINE", "KEY='unterminated", "=value", "A=\"x", "KEY=\"a\" trailing"])
def test_any_unparsable_line_is_an_error(tmp_path, line):
    env_file = tmp_path / "x.env"
    env_file.write_text(f"A=1\n{line}\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_settings(environ={}, project_root=tmp_path, env_file=env_file)


def test_valid_dotenv_forms_still_parse(tmp_path):
    env_file = tmp_path / "ok.env"
    env_file.write_bytes(
        "\ufeffexport CELORA_ENV=test\n"
        "# a comment\n"
        "CELORA_LOCK_TIMEOUT = 7   # trailing comment\n"
        "DATABASE_URL='postgresql://app:p%23w@db/celora' # a quoted # is data\n"
        'CELORA_PG_USER="multi\n#line"\n'
        "CELORA_LOCAL_DIR=${BASE}/pg\n"
        "EMPTY=\n"
        "NOVALUE\n".encode("utf-8"))
    settings = load_settings(environ={"BASE": "/srv"}, project_root=tmp_path, env_file=env_file)
    assert settings.env == "test"
    assert settings.lock_timeout == 7.0
    assert settings.database_url.password == "p#w"
    assert settings.local_pg_user == "multi\n#line"
    assert settings.local_dir == Path("/srv/pg")  # ${BASE} from the given environment, not os.environ


# --------------------------------------------------------------------------- 6. one timeout validator


@pytest.mark.parametrize("name,value", [
    ("CELORA_HEALTH_TIMEOUT", "0"), ("CELORA_HEALTH_TIMEOUT", "inf"), ("CELORA_HEALTH_TIMEOUT", "1e12"),
    ("CELORA_HEALTH_TIMEOUT", "0.4"), ("CELORA_HEALTH_TIMEOUT", "3601"), ("CELORA_HEALTH_TIMEOUT", "nan"),
    ("CELORA_CONNECT_TIMEOUT", "0"), ("CELORA_CONNECT_TIMEOUT", "0.5"), ("CELORA_CONNECT_TIMEOUT", "1e400"),
    ("CELORA_STATEMENT_TIMEOUT", "-1"), ("CELORA_STATEMENT_TIMEOUT", "86401"),
    ("CELORA_LOCK_TIMEOUT", "-0.1"), ("CELORA_LOCK_TIMEOUT", "1e12"), ("CELORA_LOCK_TIMEOUT", "forever"),
])
def test_out_of_range_timeouts_in_the_environment_are_config_errors(tmp_path, name, value):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value}, project_root=tmp_path)
    assert info.value.exit_code == ExitCode.CONFIG == 3
    assert info.value.message.startswith(name)
    assert "seconds" in info.value.hint


@pytest.mark.parametrize("name,value,expected", [
    ("CELORA_HEALTH_TIMEOUT", "0.5", 0.5), ("CELORA_HEALTH_TIMEOUT", "3600", 3600.0),
    ("CELORA_CONNECT_TIMEOUT", "1", 1.0), ("CELORA_STATEMENT_TIMEOUT", "0", 0.0),
    ("CELORA_LOCK_TIMEOUT", " 0 ", 0.0), ("CELORA_LOCK_TIMEOUT", "86400", 86400.0),
])
def test_timeouts_at_the_limits_are_accepted(tmp_path, name, value, expected):
    settings = load_settings(environ={name: value}, project_root=tmp_path)
    field = name.removeprefix("CELORA_").lower()
    assert getattr(settings, field) == expected


@pytest.mark.parametrize("flags", [{"health_timeout": float("inf")}, {"health_timeout": 0},
                                   {"health_timeout": 1e12}, {"connect_timeout": 0},
                                   {"lock_timeout": -1}, {"statement_timeout": float("nan")},
                                   {"health_timeout": "soon"}, {"lock_timeout": True}])
def test_flag_overrides_are_validated_like_the_environment(tmp_path, flags):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, project_root=tmp_path, **flags)
    assert info.value.message.startswith(next(iter(flags)))
    with pytest.raises(ConfigError):
        Settings(project_root=tmp_path).with_overrides(**flags)


def test_flag_overrides_within_limits_apply(tmp_path):
    settings = load_settings(environ={"CELORA_HEALTH_TIMEOUT": "9"}, project_root=tmp_path, health_timeout=2,
                             lock_timeout="0")
    assert (settings.health_timeout, settings.lock_timeout) == (2.0, 0.0)


def test_limits_are_exported_for_library_callers():
    assert HEALTH_TIMEOUT_LIMITS == (0.5, 3600.0)
    assert CONNECT_TIMEOUT_LIMITS == (1.0, 3600.0)
    assert STATEMENT_TIMEOUT_LIMITS == (0.0, 86400.0)
    assert LOCK_TIMEOUT_LIMITS == (0.0, 86400.0)
    assert validate_seconds(3, "timeout", minimum=0.5, maximum=3600) == 3.0
    with pytest.raises(ConfigError, match=r"^timeout must be a finite number of seconds, not inf\."):
        validate_seconds(float("inf"), "timeout", minimum=0.5, maximum=3600)
    with pytest.raises(ConfigError, match=r"^timeout must be from 0.5 to 3600 seconds, not 0\."):
        validate_seconds(0, "timeout", minimum=0.5, maximum=3600)


def test_cli_refuses_infinite_and_huge_health_timeouts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from celora_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    env = {"CELORA_PROJECT_ROOT": str(tmp_path), "DATABASE_URL": "postgresql://u@127.0.0.1:1/db", "NO_COLOR": "1"}
    runner = CliRunner()
    for args, extra in [(["db", "health", "--timeout", "inf"], {}),
                        (["db", "health"], {"CELORA_HEALTH_TIMEOUT": "1e12"}),
                        (["db", "health"], {"CELORA_HEALTH_TIMEOUT": "0"})]:
        result = runner.invoke(app, args, env={**env, **extra})
        assert result.exit_code == ExitCode.CONFIG, (args, extra, result.output)
        assert "internal error" not in result.output


# --------------------------------------------------------------------------- 7. project root


def test_project_root_is_found_by_migrations_env_py(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()


def test_project_root_is_found_by_tool_celora_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n[tool.celora]\n")
    (tmp_path / "sub").mkdir()
    assert find_project_root(tmp_path / "sub") == tmp_path.resolve()


def test_project_root_is_found_by_local_server_state(tmp_path):
    (tmp_path / ".celora").mkdir()
    (tmp_path / ".celora" / "server.json").write_text('{"port": 5999}')
    (tmp_path / "sub").mkdir()
    assert find_project_root(tmp_path / "sub") == tmp_path.resolve()


def test_other_projects_markers_are_not_celora(tmp_path):
    outer = tmp_path / "outer"
    (outer / "migrations").mkdir(parents=True)  # an Alembic-less folder named migrations
    (outer / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    (outer / ".env").write_text("DATABASE_URL=postgresql://someone@else/db\n")
    (outer / ".celora").mkdir()  # no server.json: nothing ever ran there
    inner = outer / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("this is [not toml\n")  # broken: skipped, not fatal
    start = inner / "deeper"
    start.mkdir()
    assert find_project_root(start) == start.resolve()  # none found: the current folder


def test_nearest_celora_project_wins(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[tool.celora]\nx = 1\n")
    assert find_project_root(inner) == inner.resolve()


def test_this_repository_is_a_celora_project():
    repo = Path(__file__).resolve().parents[2]
    assert find_project_root(repo / "tests" / "unit") == repo


# --------------------------------------------------------------------------- 8. dead code


def test_is_production_is_gone():
    assert not hasattr(Settings, "is_production")

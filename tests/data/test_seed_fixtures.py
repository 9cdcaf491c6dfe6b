"""Chain formats against published vectors, and the fixture loader's answers to broken files (no database)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from celora_cli.data.seed.chain_formats import (
    base58_decode,
    base58_encode,
    eip55,
    keccak256,
    normalize_bitcoin_address,
    normalize_evm_address,
    normalize_solana_address,
    normalize_solana_signature,
)
from celora_cli.data.seed.fixtures import load_fixtures
from celora_cli.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# EIP-55's own test vectors (https://eips.ethereum.org/EIPS/eip-55).
EIP55_VECTORS = [
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def test_keccak256_of_empty_input():
    # Ethereum's well-known empty hash (SHA3-256 of b"" differs: a7ffc6f8...).
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_eip55_vectors(address):
    assert eip55(address) == address
    assert normalize_evm_address(address) == address.lower()


@pytest.mark.parametrize("wrong", [
    "0x5aaEb6053F3E94C9b9A09f33669435E7Ef1BeAed",  # one letter's case flipped
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAee",  # one digit mistyped, casing kept
])
def test_eip55_mismatch_is_refused(wrong):
    with pytest.raises(ValueError, match="EIP-55 checksum"):
        normalize_evm_address(wrong)


@pytest.mark.parametrize("bad", ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
                                 "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                                 "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg"])
def test_evm_address_shape(bad):
    with pytest.raises(ValueError, match="40 hex"):
        normalize_evm_address(bad)


# BIP-173 (bech32) and BIP-86 (a bech32m taproot address) vectors.
@pytest.mark.parametrize(("address", "stored"), [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
     "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"),
    ("bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr",
     "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"),
])
def test_bech32_valid(address, stored):
    assert normalize_bitcoin_address(address) == stored


@pytest.mark.parametrize(("address", "problem"), [
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "checksum"),  # last character changed
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7KV8F3T4", "mixed"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3tb", "only the characters"),  # 'b' is not in the charset
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "bech32"),  # a legacy base58 address
    ("ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9", "starts with"),
])
def test_bech32_invalid(address, problem):
    with pytest.raises(ValueError, match=problem):
        normalize_bitcoin_address(address)


@pytest.mark.parametrize("address", [
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # BIP-350: a v0 program with a bech32m checksum
    "bc1pqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5us4ke",  # a v1 program with a bech32 checksum
])
def test_checksum_variant_must_match_the_witness_version(address):
    with pytest.raises(ValueError, match="BIP-350"):
        normalize_bitcoin_address(address)


def test_base58_round_trip_and_solana_sizes():
    assert base58_decode("11111111111111111111111111111111") == bytes(32)  # the system program
    assert len(base58_decode("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")) == 32
    data = bytes([0, 0, 7, 200, 3])
    assert base58_decode(base58_encode(data)) == data
    assert normalize_solana_address("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")
    with pytest.raises(ValueError, match="32 bytes"):
        normalize_solana_address("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAW")
    with pytest.raises(ValueError, match="not a base58 character"):
        normalize_solana_address("0WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")
    with pytest.raises(ValueError, match="64 bytes"):
        normalize_solana_signature("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")


# --------------------------------------------------------------------------- the loader


@pytest.fixture
def fixtures_dir(tmp_path) -> Path:
    copy = tmp_path / "fixtures"
    shutil.copytree(REPO / "fixtures", copy)
    return copy


def test_the_repository_fixtures_are_valid():
    fixtures = load_fixtures(REPO / "fixtures")
    assert fixtures.counts() == {"users": 2, "wallets": 4, "transactions": 8, "notifications": 6}
    assert {w["chain"] for w in fixtures.wallets} == {"celo", "ethereum", "bitcoin", "solana"}
    assert {t["status"] for t in fixtures.transactions} >= {"pending", "confirmed", "failed"}
    assert {t["direction"] for t in fixtures.transactions} >= {"incoming", "outgoing"}
    assert {n["channel"] for n in fixtures.notifications} == {"push", "email", "in_app"}
    assert {n["read_at"] is None for n in fixtures.notifications} == {True, False}
    # Beyond 64 bits, written as a string of digits.
    assert max(t["amount"] for t in fixtures.transactions) == 25 * 10**18


def broken(fixtures_dir: Path, file: str, old: str, new: str, count: int = 1) -> str:
    path = fixtures_dir / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))
    with pytest.raises(ConfigError) as caught:
        load_fixtures(fixtures_dir)
    return caught.value.message


def test_toml_syntax_error_gives_line_and_column(fixtures_dir):
    message = broken(fixtures_dir, "users.toml", 'display_name = "Bob Baptiste"', 'display_name = "Bob Baptiste')
    assert "users.toml: TOML syntax error" in message and "line 17" in message


@pytest.mark.parametrize(("file", "old", "new", "place", "problem"), [
    ("users.toml", 'email = "bob@celora.io"', 'email = "Alice@Celora.io"', "users[1].email", "already used"),
    ("users.toml", 'firebase_uid = "fixture-bob-0002"\n', "", "users[1].firebase_uid", "required"),
    ("users.toml", "email_verified = false", "email_verified = 0", "users[1].email_verified", "an integer"),
    ("wallets.toml", 'chain = "solana"', 'chain = "dogecoin"', "wallets[3].chain", "not one of"),
    ("wallets.toml", 'label = "Bob\'s savings"', "label = \"Bob's savings\"\nis_primary = false\nis_primary = true",
     "wallets.toml", "TOML syntax error"),
    ("wallets.toml", 'label = "Alice on Ethereum (MetaMask)"', 'label = "x"\nis_primary = true',
     "wallets[1].is_primary", "already has a primary wallet"),
    ("transactions.toml", "amount = 1250000", "amount = -5", "transactions[4].amount", "negative"),
    ("transactions.toml", "amount = 1250000", "amount = 0.0125", "transactions[4].amount", "a float"),
    ("transactions.toml", "block_timestamp = 2026-11-19T08:02:33Z", "block_timestamp = 2026-11-19T08:02:33",
     "transactions[4].block_timestamp", "UTC offset"),
    ("transactions.toml", 'asset = "BTC"',
     'asset = "BTC"\ntoken_contract = "bc1qd4gayzh3xzfmkjprc96y7etxqk5ftkwau0ekf7"',
     "transactions[4].token_contract", "only EVM chains"),
    ("transactions.toml", "tx_hash = \"f5312a06", "tx_hash = \"0xf5312a06", "transactions[4].tx_hash",
     "64 hex digits"),
    ("transactions.toml", 'from_address = "Dh1BmBVpT5ScJ2wtwxbeZy6mAVesVZGyi88Zfoy1zfDE"\n'
     'to_address = "HPLUuSo1NCVtPims6xbvPv2HtRK6Kvpboif3ZfwFNGkg"',
     'from_address = "HPLUuSo1NCVtPims6xbvPv2HtRK6Kvpboif3ZfwFNGkg"\n'
     'to_address = "Dh1BmBVpT5ScJ2wtwxbeZy6mAVesVZGyi88Zfoy1zfDE"',
     "transactions[6].to_address", "swapped from_address and to_address"),
    ("notifications.toml", 'channel = "push"', 'channel = "sms"', "notifications[1].channel", "not one of"),
    ("notifications.toml", 'data = { chain = "solana" }', 'data = { seed_key = "x" }',
     "notifications[5].data.seed_key", "reserved"),
    ("notifications.toml", "[[notifications]]", "oops = 1\n[[notifications]]", "notifications.toml: oops",
     "unknown top-level key"),
])
def test_broken_values_name_file_and_place(fixtures_dir, file, old, new, place, problem):
    message = broken(fixtures_dir, file, old, new)
    assert f"{file}: " in message
    assert place in message and problem in message
    assert "Nothing was written" in message


def test_a_transaction_wallet_in_another_casing_still_resolves(fixtures_dir):
    path = fixtures_dir / "transactions.toml"
    path.write_text(path.read_text().replace('wallet = "0xdd532982fd2Da62aB60E411DD1f8ced9bc7ae732"',
                                             'wallet = "0xdd532982fd2da62ab60e411dd1f8ced9bc7ae732"'))
    fixtures = load_fixtures(fixtures_dir)
    assert {t["wallet"] for t in fixtures.transactions if t["chain"] == "ethereum"} == {
        "0xdd532982fd2da62ab60e411dd1f8ced9bc7ae732"}


def test_missing_file_and_missing_folder(fixtures_dir, tmp_path):
    (fixtures_dir / "notifications.toml").unlink()
    with pytest.raises(ConfigError, match="notifications.toml: the file is missing"):
        load_fixtures(fixtures_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        load_fixtures(tmp_path / "nowhere")


def test_empty_file_means_no_rows(fixtures_dir):
    for name in ("transactions", "notifications"):
        (fixtures_dir / f"{name}.toml").write_text("# nothing yet\n")
    fixtures = load_fixtures(fixtures_dir)
    assert fixtures.counts()["transactions"] == 0 and fixtures.counts()["users"] == 2

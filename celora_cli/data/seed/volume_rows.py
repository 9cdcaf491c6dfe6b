"""The volume seed's rows: N users with wallets, transactions and notifications, as COPY text lines.

Deterministic: every value comes from random.Random instances seeded from `seed` (ids included) and a fixed
base time, never from now(). The same seed therefore gives identical rows, and user i of a run with N users
is user i of any run with more users of the same seed.

Cheap per row: Faker builds small pools of names and sentences once (it makes ~6,000 values/s); rows combine
pool entries with cheap random draws. Nothing is kept per row: each table's pass replays the (deterministic) plan
of users and wallets instead of holding it.

Unique values (addresses, hashes, Firebase UIDs) are keyed hashes of a counter, keyed by the seed: unique
within a run by construction of the counter, and across seeds by the key. Emails live under a seed-tagged
domain, `s<seed>.volume.celora.test` (.test is reserved, so no real address and no fixture collides).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from celora_cli.data.seed.chain_formats import base58_encode, segwit_v0_address

TABLES = ("users", "wallets", "transactions", "notifications")

# All times are relative to this instant: the same seed gives the same rows whenever it runs.
BASE_TIME = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
BASE_EPOCH = int(BASE_TIME.timestamp())
DAY = 86_400
EMAIL_DOMAIN = "volume.celora.test"

# Pool sizes: enough variety for a realistic-looking table, small enough for Faker to build in well under 1 s.
NAME_POOL = 400
SENTENCE_POOL = 300


# ---------------------------------------------------------------------------------------------------------
# Chains: what an address, a hash, a block and an asset look like on each.


@dataclass(frozen=True)
class Asset:
    symbol: str
    contract: str | None  # None: the chain's native coin
    decimals: int


@dataclass(frozen=True)
class ChainSpec:
    name: str
    block_seconds: float
    head_block: int  # the block at BASE_TIME
    fee_range: tuple[int, int]  # in the native coin's base units
    assets: tuple[Asset, ...]  # the first is the native coin, chosen most often


CHAINS = (
    ChainSpec("celo", 1.0, 52_000_000, (200_000_000_000_000, 5_000_000_000_000_000), (
        Asset("CELO", None, 18),
        Asset("cUSD", "0x765de816845861e75a25fca122bb6898b8b1282a", 18),
        Asset("USDC", "0xceba9300f2b948710d2653dd7b07f33a8b32118c", 6),
    )),
    ChainSpec("ethereum", 12.0, 24_100_000, (50_000_000_000_000, 3_000_000_000_000_000), (
        Asset("ETH", None, 18),
        Asset("USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6),
        Asset("USDT", "0xdac17f958d2ee523a2206206994597c13d831ec7", 6),
    )),
    ChainSpec("bitcoin", 600.0, 972_000, (1_000, 40_000), (
        Asset("BTC", None, 8),
    )),
    ChainSpec("solana", 0.4, 410_000_000, (5_000, 100_000), (
        Asset("SOL", None, 9),
        Asset("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
    )),
)

COUNTERPARTIES_PER_CHAIN = 2_048  # exchanges, friends, contracts: the addresses users' money comes from and goes to


class Keyed:
    """Hashes of a counter keyed by the seed and a purpose: deterministic, unique, random-looking."""

    def __init__(self, seed: int, purpose: str) -> None:
        self._key = hashlib.blake2b(f"celora-volume:{seed}:{purpose}".encode(), digest_size=32).digest()

    def digest(self, counter: int, size: int) -> bytes:
        return hashlib.blake2b(counter.to_bytes(8, "little"), digest_size=size, key=self._key).digest()

    def hexdigest(self, counter: int, size: int) -> str:
        return hashlib.blake2b(counter.to_bytes(8, "little"), digest_size=size, key=self._key).hexdigest()


def address(chain: str, keyed: Keyed, counter: int) -> str:
    if chain in ("celo", "ethereum"):
        return "0x" + keyed.hexdigest(counter, 20)  # lowercase hex: the schema's CHECK wants it
    if chain == "bitcoin":
        return segwit_v0_address(keyed.digest(counter, 20))
    return base58_encode(keyed.digest(counter, 32))  # a Solana public key


def tx_hash(chain: str, keyed: Keyed, counter: int) -> str:
    if chain in ("celo", "ethereum"):
        return "0x" + keyed.hexdigest(counter, 32)
    if chain == "bitcoin":
        return keyed.hexdigest(counter, 32)
    return base58_encode(keyed.digest(counter, 64))  # a Solana signature


# ---------------------------------------------------------------------------------------------------------
# COPY text format helpers: every value written is built here, so escaping happens once, on the pools.

NULL = "\\N"


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _uuid(bits: int) -> str:
    """A version-4 UUID from 128 random bits, as the 32 hex digits PostgreSQL's uuid input accepts."""
    bits = bits & ~(0xF000 << 64) | 0x4000 << 64  # version 4
    bits = bits & ~(0xC000 << 48) | 0x8000 << 48  # RFC 4122 variant
    return f"{bits:032x}"


_MINUTES_SECONDS = [f"{m:02d}:{s:02d}+00" for m in range(60) for s in range(60)]


class Timestamps:
    """Epoch seconds as timestamptz text: "YYYY-MM-DD HH:" cached per hour (a few years: ~20,000 entries)."""

    def __init__(self) -> None:
        self._hours: dict[int, str] = {}

    def __call__(self, epoch: int) -> str:
        hour, rest = divmod(epoch, 3600)
        prefix = self._hours.get(hour)
        if prefix is None:
            prefix = self._hours[hour] = dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%d %H:")
        return prefix + _MINUTES_SECONDS[rest]


# ---------------------------------------------------------------------------------------------------------
# Faker pools: built once per run with a seeded Faker, combined per row.


@dataclass(frozen=True)
class Pools:
    first_names: list[str]
    last_names: list[str]
    sentences: list[str]  # COPY-escaped
    email_parts: list[str]  # lowercase ASCII slugs: the first names', then the last names'


def _ascii_slug(text: str) -> str:
    return "".join(c for c in text.lower() if "a" <= c <= "z") or "user"


def build_pools(seed: int) -> Pools:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    first = [fake.first_name() for _ in range(NAME_POOL)]
    last = [fake.last_name() for _ in range(NAME_POOL)]
    sentences = [_copy_text(fake.sentence(nb_words=10)) for _ in range(SENTENCE_POOL)]
    return Pools(
        first_names=[_copy_text(n) for n in first],
        last_names=[_copy_text(n) for n in last],
        sentences=sentences,
        email_parts=[_ascii_slug(n) for n in first] + [_ascii_slug(n) for n in last],
    )


# ---------------------------------------------------------------------------------------------------------
# The plan: users and their wallets, replayed (not stored) by every pass.

WALLET_COUNT_WEIGHTS = (1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4)  # 1-4, fewer as it grows
WALLET_LABELS = ("Main", "Savings", "Trading", "Cold storage", "DeFi", "Payments", NULL, NULL)
ACCOUNT_AGE_DAYS = (30, 730)  # users signed up between two years and a month before BASE_TIME


@dataclass(slots=True)
class PlannedWallet:
    id: str
    chain: ChainSpec
    counter: int  # the run's wallet counter: derives the address
    is_primary: bool
    label: str
    created_at: int
    transactions: int


@dataclass(slots=True)
class PlannedUser:
    index: int
    id: str
    first: int
    last: int
    created_at: int
    notifications: int
    wallets: list[PlannedWallet]


def plan(seed: int, users: int) -> Iterator[PlannedUser]:
    rng = random.Random(f"celora-volume:{seed}:plan")
    wallet_counter = 0
    for index in range(users):
        created_at = BASE_EPOCH - rng.randint(ACCOUNT_AGE_DAYS[0] * DAY, ACCOUNT_AGE_DAYS[1] * DAY)
        user = PlannedUser(
            index=index,
            id=_uuid(rng.getrandbits(128)),
            first=rng.randrange(NAME_POOL),
            last=rng.randrange(NAME_POOL),
            created_at=created_at,
            notifications=rng.randint(1, 8),
            wallets=[],
        )
        chains = rng.sample(CHAINS, rng.choice(WALLET_COUNT_WEIGHTS))
        has_primary = rng.random() < 0.9
        for position, chain in enumerate(chains):
            user.wallets.append(PlannedWallet(
                id=_uuid(rng.getrandbits(128)),
                chain=chain,
                counter=wallet_counter,
                is_primary=has_primary and position == 0,  # at most one primary per user (a unique index)
                label=rng.choice(WALLET_LABELS),
                # Linked within the first week after sign-up, so its history fits before BASE_TIME.
                created_at=created_at + rng.randint(60, 7 * DAY),
                transactions=rng.randint(2, 16),
            ))
            wallet_counter += 1
        yield user


def planned_counts(*, users: int, seed: int) -> dict[str, int]:
    """The number of rows generate_volume(users=, seed=) writes per table, without writing anything."""
    counts = dict.fromkeys(TABLES, 0)
    for user in plan(seed, users):
        counts["users"] += 1
        counts["notifications"] += user.notifications
        counts["wallets"] += len(user.wallets)
        counts["transactions"] += sum(w.transactions for w in user.wallets)
    return counts


# ---------------------------------------------------------------------------------------------------------
# Rows, as COPY text lines.

USER_COLUMNS = ("id", "firebase_uid", "email", "email_verified", "display_name", "photo_url", "phone_number",
                "disabled", "last_login_at", "metadata", "created_at", "updated_at")
WALLET_COLUMNS = ("id", "user_id", "chain", "address", "label", "is_primary", "created_at", "updated_at")
TRANSACTION_COLUMNS = ("id", "wallet_id", "chain", "tx_hash", "direction", "status", "from_address",
                       "to_address", "amount", "asset", "token_contract", "decimals", "fee", "block_number",
                       "block_timestamp", "confirmations", "created_at", "updated_at")
NOTIFICATION_COLUMNS = ("id", "user_id", "channel", "type", "title", "body", "data", "status", "read_at",
                        "sent_at", "error", "created_at", "updated_at")

FIREBASE_UID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def firebase_uid(keyed: Keyed, counter: int) -> str:
    number = int.from_bytes(keyed.digest(counter, 21), "big")
    chars = []
    for _ in range(28):  # Firebase Auth UIDs are 28 alphanumerics
        number, digit = divmod(number, 62)
        chars.append(FIREBASE_UID_ALPHABET[digit])
    return "".join(chars)


def email(pools: Pools, seed: int, user: PlannedUser) -> str:
    first = pools.email_parts[user.first]
    last = pools.email_parts[NAME_POOL + user.last]
    # The user index makes it unique within the run, the seed-tagged domain across runs and fixtures.
    return f"{first}.{last}.{user.index}@s{seed}.{EMAIL_DOMAIN}"


def user_rows(seed: int, users: int, pools: Pools, ts: Timestamps) -> Iterator[str]:
    rng = random.Random(f"celora-volume:{seed}:users")
    uids = Keyed(seed, "firebase_uid")
    metadata = _copy_text(json.dumps({"source": "celora db seed --users", "seed": seed}))
    for user in plan(seed, users):
        uid = firebase_uid(uids, user.index)
        verified = "t" if rng.random() < 0.8 else "f"
        photo = f"https://avatars.celora.test/{uid}.png" if rng.random() < 0.3 else NULL
        phone = f"+1{rng.randrange(2_000_000_000, 10_000_000_000)}" if rng.random() < 0.4 else NULL
        disabled = "t" if rng.random() < 0.02 else "f"
        last_login = ts(rng.randint(user.created_at, BASE_EPOCH)) if rng.random() < 0.9 else NULL
        updated = user.created_at + rng.randrange(0, BASE_EPOCH - user.created_at)
        yield (f"{user.id}\t{uid}\t{email(pools, seed, user)}\t{verified}\t"
               f"{pools.first_names[user.first]} {pools.last_names[user.last]}\t{photo}\t{phone}\t{disabled}\t"
               f"{last_login}\t{metadata}\t{ts(user.created_at)}\t{ts(updated)}\n")


def wallet_rows(seed: int, users: int, ts: Timestamps) -> Iterator[str]:
    addresses = Keyed(seed, "wallet_address")
    for user in plan(seed, users):
        for wallet in user.wallets:
            created = ts(wallet.created_at)
            yield (f"{wallet.id}\t{user.id}\t{wallet.chain.name}\t"
                   f"{address(wallet.chain.name, addresses, wallet.counter)}\t{wallet.label}\t"
                   f"{'t' if wallet.is_primary else 'f'}\t{created}\t{created}\n")


def _counterparties(seed: int) -> dict[str, list[str]]:
    keyed = Keyed(seed, "counterparty")
    return {
        spec.name: [address(spec.name, keyed, n) for n in range(COUNTERPARTIES_PER_CHAIN)]
        for spec in CHAINS
    }


def transaction_rows(seed: int, users: int, ts: Timestamps) -> Iterator[str]:
    rng = random.Random(f"celora-volume:{seed}:transactions")
    random_ = rng.random
    getrandbits = rng.getrandbits
    addresses = Keyed(seed, "wallet_address")
    hashes = Keyed(seed, "tx_hash")
    counterparties = _counterparties(seed)
    counter = 0
    for user in plan(seed, users):
        for wallet in user.wallets:
            spec = wallet.chain
            chain = spec.name
            own = address(chain, addresses, wallet.counter)
            others = counterparties[chain]
            assets = spec.assets
            fee_low, fee_span = spec.fee_range[0], spec.fee_range[1] - spec.fee_range[0]
            history_span = BASE_EPOCH - 3_600 - wallet.created_at
            for _ in range(wallet.transactions):
                roll = random_()
                status = "confirmed" if roll < 0.86 else "pending" if roll < 0.93 else "failed"
                outgoing = random_() < 0.45
                other = others[getrandbits(11)]  # COUNTERPARTIES_PER_CHAIN == 2**11
                asset = assets[0] if random_() < 0.7 else assets[int(random_() * len(assets))]
                # Log-uniform between 10^-4 and 10^4 whole units: many small payments, few large ones.
                amount = max(1, int(10 ** (random_() * 8 - 4 + asset.decimals)))
                if status == "pending":  # broadcast in the last half hour, no block yet
                    seen = BASE_EPOCH - int(random_() * 1_800)
                    fee = block = block_time = NULL
                    confirmations = "0"
                    updated = seen
                else:
                    seen = wallet.created_at + int(random_() * history_span)
                    fee = str(fee_low + int(random_() * fee_span)) if outgoing else NULL
                    if status == "failed" and chain == "bitcoin":  # rejected, never mined, no fee paid
                        fee = block = block_time = NULL
                        confirmations = "0"
                        updated = seen + 600
                    else:  # mined (a failed EVM or Solana transaction is mined too, and pays its fee)
                        blocks_back = int((BASE_EPOCH - seen) / spec.block_seconds) - 1 - int(random_() * 3)
                        block_number = spec.head_block - blocks_back
                        block_epoch = BASE_EPOCH - int(blocks_back * spec.block_seconds)
                        block, block_time = str(block_number), ts(block_epoch)
                        confirmations = str(blocks_back + 1)
                        updated = block_epoch + 5
                if outgoing:
                    direction, source, target = "outgoing", own, other
                else:
                    direction, source, target = "incoming", other, own
                yield (f"{_uuid(getrandbits(128))}\t{wallet.id}\t{chain}\t{tx_hash(chain, hashes, counter)}\t"
                       f"{direction}\t{status}\t{source}\t{target}\t{amount}\t{asset.symbol}\t"
                       f"{asset.contract or NULL}\t{asset.decimals}\t{fee}\t{block}\t{block_time}\t"
                       f"{confirmations}\t{ts(seen)}\t{ts(updated)}\n")
                counter += 1


NOTIFICATION_KINDS = (  # (type, title template); {asset} filled per row
    ("transaction_received", "You received {asset}"),
    ("transaction_sent", "Your {asset} payment was sent"),
    ("transaction_failed", "A {asset} transaction failed"),
    ("security_alert", "New sign-in to your account"),
    ("price_alert", "{asset} moved more than 5% today"),
    ("product_update", "What's new in Celora"),
)
DELIVERY_ERRORS = ("device token expired", "mailbox unavailable", "rate limited by provider")
CHANNELS = ("push", "email", "in_app")


def notification_rows(seed: int, users: int, pools: Pools, ts: Timestamps) -> Iterator[str]:
    rng = random.Random(f"celora-volume:{seed}:notifications")
    random_ = rng.random
    sentences = pools.sentences
    data_by_chain = {spec.name: _copy_text(json.dumps({"chain": spec.name})) for spec in CHAINS}
    for user in plan(seed, users):
        span = BASE_EPOCH - user.created_at
        for _ in range(user.notifications):
            kind, title = NOTIFICATION_KINDS[int(random_() * len(NOTIFICATION_KINDS))]
            spec = CHAINS[int(random_() * len(CHAINS))]
            channel = CHANNELS[int(random_() * 3)]
            created = user.created_at + int(random_() * span)
            roll = random_()
            read_at = sent_at = error = NULL
            updated = created
            if channel == "in_app":  # shown in the app, never "sent"
                status = "delivered"
            elif roll < 0.05:
                status, error = "failed", DELIVERY_ERRORS[int(random_() * len(DELIVERY_ERRORS))]
            elif roll < 0.12:
                status = "pending"
            else:
                status = "delivered" if roll < 0.7 else "sent"
                updated = created + 1 + int(random_() * 30)
                sent_at = ts(updated)
            if status == "delivered" and random_() < 0.6:  # read: unread ones keep read_at NULL
                updated = min(BASE_EPOCH, updated + 60 + int(random_() * 3 * DAY))
                read_at = ts(updated)
            yield (f"{_uuid(rng.getrandbits(128))}\t{user.id}\t{channel}\t{kind}\t"
                   f"{title.format(asset=spec.assets[0].symbol)}\t{sentences[int(random_() * len(sentences))]}\t"
                   f"{data_by_chain[spec.name]}\t{status}\t{read_at}\t{sent_at}\t{error}\t"
                   f"{ts(created)}\t{ts(updated)}\n")


"""Address and transaction-hash formats of the four chains, checked the way each chain checks them.

EVM (Celo, Ethereum): `0x` + 40 hex; mixed case must carry a valid EIP-55 checksum (Keccak-256, which
hashlib does not have: the small permutation below, tested against EIP-55's published vectors); stored
lowercase, as the database's CHECK demands. Bitcoin: segwit bech32 (BIP-173) or bech32m (BIP-350),
checksum verified, stored lowercase (its canonical form; upper case exists only for QR codes). Solana:
base58 of a 32-byte public key, kept as given (base58 is case-sensitive).

Each `normalize_*` returns the stored form or raises ValueError saying what is wrong. The encoders
(`base58_encode`, `segwit_v0_address`) build these formats for the volume seed (data/seed/volume.py).
"""

from __future__ import annotations

import functools
import re

# --------------------------------------------------------------------------- Keccak-256 (EIP-55)

_MASK64 = (1 << 64) - 1


def _rotl64(value: int, shift: int) -> int:
    shift %= 64
    return ((value << shift) | (value >> (64 - shift))) & _MASK64


def _keccak_f1600(lanes: list[list[int]]) -> None:
    """The permutation, in place on lanes[x][y] (after the Keccak team's CompactFIPS202 reference)."""
    lfsr = 1
    for _round in range(24):
        columns = [lanes[x][0] ^ lanes[x][1] ^ lanes[x][2] ^ lanes[x][3] ^ lanes[x][4] for x in range(5)]
        for x in range(5):
            d = columns[(x + 4) % 5] ^ _rotl64(columns[(x + 1) % 5], 1)
            for y in range(5):
                lanes[x][y] ^= d
        x, y = 1, 0
        current = lanes[x][y]
        for t in range(24):
            x, y = y, (2 * x + 3 * y) % 5
            current, lanes[x][y] = lanes[x][y], _rotl64(current, (t + 1) * (t + 2) // 2)
        for y in range(5):
            row = [lanes[x][y] for x in range(5)]
            for x in range(5):
                lanes[x][y] = row[x] ^ ((~row[(x + 1) % 5]) & row[(x + 2) % 5])
        for j in range(7):
            lfsr = ((lfsr << 1) ^ ((lfsr >> 7) * 0x71)) % 256
            if lfsr & 2:
                lanes[0][0] ^= 1 << ((1 << j) - 1)


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (the original padding 0x01, not SHA3-256's 0x06)."""
    rate = 136
    padded = bytearray(data) + b"\x01" + bytes((-len(data) - 1) % rate)
    padded[-1] |= 0x80
    lanes = [[0] * 5 for _ in range(5)]
    for offset in range(0, len(padded), rate):
        for i in range(rate // 8):
            start = offset + 8 * i
            lanes[i % 5][i // 5] ^= int.from_bytes(padded[start:start + 8], "little")
        _keccak_f1600(lanes)
    return b"".join(lanes[i % 5][i // 5].to_bytes(8, "little") for i in range(4))


def eip55(address: str) -> str:
    """The EIP-55 checksum casing of a `0x` + 40 hex address."""
    hex_part = address[2:].lower()
    digest = keccak256(hex_part.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c
                          for i, c in enumerate(hex_part))


_EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_EVM_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


def normalize_evm_address(value: str) -> str:
    if not _EVM_ADDRESS.fullmatch(value):
        raise ValueError("an EVM address is 0x followed by 40 hex digits")
    hex_part = value[2:]
    # EIP-55: all-lower and all-upper carry no checksum; mixed case must be the checksum casing.
    if hex_part != hex_part.lower() and hex_part != hex_part.upper() and value != eip55(value):
        # No "did you mean": the checksummed form of a mistyped address is still the wrong address.
        raise ValueError("the EIP-55 checksum of its mixed casing does not match: a character is mistyped, or the "
                         "casing was edited by hand (copy the address again from its source)")
    return value.lower()


def normalize_evm_hash(value: str) -> str:
    if not _EVM_HASH.fullmatch(value):
        raise ValueError("an EVM transaction hash is 0x followed by 64 hex digits")
    return value.lower()


# --------------------------------------------------------------------------- bech32 / bech32m (Bitcoin)

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3
BITCOIN_HRPS = ("bc", "tb", "bcrt")  # mainnet, testnet/signet, regtest


def bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            checksum ^= generator[i] if (top >> i) & 1 else 0
    return checksum


def bech32_hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int] | None:
    """Regroup `from_bits`-bit groups into `to_bits`-bit groups (BIP-173's convertbits). `pad`: the last group is
    filled with zero bits (bytes to 5-bit groups, encoding); without it, the leftover bits must be zero padding
    shorter than a group, else None (5-bit groups to bytes, decoding)."""
    accumulator, bits, result, max_value = 0, 0, [], (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            result.append((accumulator >> bits) & max_value)
    if pad:
        if bits:
            result.append((accumulator << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (accumulator << (to_bits - bits)) & max_value:
        return None
    return result


def segwit_v0_address(program: bytes, hrp: str = "bc") -> str:
    """A bech32 (BIP-173) native SegWit v0 address, bc1q..., with a valid checksum."""
    data = [0, *(convert_bits(program, 8, 5, pad=True) or [])]  # witness version 0, then the program
    polymod = bech32_polymod(bech32_hrp_expand(hrp) + data + [0] * 6) ^ _BECH32_CONST
    checksum = [polymod >> 5 * (5 - i) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[d] for d in data + checksum)


def normalize_bitcoin_address(value: str) -> str:
    """A segwit address (bc1q... bech32, bc1p... bech32m), checksum and witness program verified."""
    if value != value.lower() and value != value.upper():
        raise ValueError("a bech32 address is all lower case or all upper case, never mixed")
    address = value.lower()
    separator = address.rfind("1")
    if not 1 <= separator or separator + 7 > len(address) or len(address) > 90:
        raise ValueError("not a bech32 address (bc1 followed by the data part)")
    hrp, data_part = address[:separator], address[separator + 1:]
    if hrp not in BITCOIN_HRPS:
        raise ValueError(f"a Bitcoin segwit address starts with {', '.join(h + '1' for h in BITCOIN_HRPS)}")
    if any(c not in BECH32_CHARSET for c in data_part):
        raise ValueError(f"bech32 uses only the characters {BECH32_CHARSET} after the 1")
    data = [BECH32_CHARSET.index(c) for c in data_part]
    constant = bech32_polymod(bech32_hrp_expand(hrp) + data)
    if constant not in (_BECH32_CONST, _BECH32M_CONST):
        raise ValueError("the bech32 checksum does not match (a typo?)")
    version = data[0]
    program = convert_bits(data[1:-6], 5, 8, pad=False)
    if version > 16 or program is None or not 2 <= len(program) <= 40:
        raise ValueError("the bech32 data is not a valid segwit witness program")
    if version == 0 and len(program) not in (20, 32):
        raise ValueError("a version 0 witness program is 20 (P2WPKH) or 32 (P2WSH) bytes")
    if (version == 0) != (constant == _BECH32_CONST):
        raise ValueError("witness version 0 uses the bech32 checksum, versions 1 and up bech32m (BIP-350)")
    return address


_HEX_64 = re.compile(r"[0-9a-fA-F]{64}")


def normalize_bitcoin_txid(value: str) -> str:
    if not _HEX_64.fullmatch(value):
        raise ValueError("a Bitcoin txid is 64 hex digits (no 0x)")
    return value.lower()


# --------------------------------------------------------------------------- base58 (Solana)

_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58_decode(value: str) -> bytes:
    number = 0
    for c in value:
        digit = _BASE58_ALPHABET.find(c)
        if digit < 0:
            raise ValueError(f"{c!r} is not a base58 character (base58 has no 0, O, I or l)")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    leading_zeros = len(value) - len(value.lstrip("1"))
    return bytes(leading_zeros) + body


@functools.cache
def _base58_triples() -> list[str]:
    """Every three-digit base58 string, in order (195,112 of them): built on first use, as only encoding needs it."""
    return [a + b + c for a in _BASE58_ALPHABET for b in _BASE58_ALPHABET for c in _BASE58_ALPHABET]


_BASE58_CHUNK = 58**9


def base58_encode(data: bytes) -> str:
    """Nine digits per division, three per table lookup: the volume seed writes a Solana signature per row."""
    number = int.from_bytes(data, "big")
    triples = _base58_triples()
    chunks = []
    while number:
        number, chunk = divmod(number, _BASE58_CHUNK)
        high, low = divmod(chunk, 58**3)
        high, middle = divmod(high, 58**3)
        chunks.append(triples[high] + triples[middle] + triples[low])
    digits = "".join(reversed(chunks)).lstrip("1")  # the chunks' zero padding, not the number's
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def _base58_of_length(value: str, size: int, what: str) -> str:
    if not value:
        raise ValueError(f"a Solana {what} is base58 text, not empty")
    if len(base58_decode(value)) != size:
        raise ValueError(f"a Solana {what} is base58 of exactly {size} bytes")
    return value


def normalize_solana_address(value: str) -> str:
    return _base58_of_length(value, 32, "address (public key)")


def normalize_solana_signature(value: str) -> str:
    return _base58_of_length(value, 64, "transaction signature")


# --------------------------------------------------------------------------- by chain

ADDRESS_NORMALIZERS = {
    "celo": normalize_evm_address,
    "ethereum": normalize_evm_address,
    "bitcoin": normalize_bitcoin_address,
    "solana": normalize_solana_address,
}

TX_HASH_NORMALIZERS = {
    "celo": normalize_evm_hash,
    "ethereum": normalize_evm_hash,
    "bitcoin": normalize_bitcoin_txid,
    "solana": normalize_solana_signature,
}

#!/usr/bin/env python3
"""Independent BFV decryption of the project's serialized ciphertexts in vectors/bfv/.

Shares no code with the project: it parses the byte format documented in
core/src/bfv/serialization.rs, recomputes the parameter identifier, computes
v = c0 + c1 s (+ c2 s^2) modulo each prime with its own negacyclic products
(generate_ntt.py's recursive DFT), composes v modulo Q with Python integers, takes
m = round(t v / Q) mod t, and decodes the slots as evaluations at psi_t^(2 bitrev(i) + 1).
The galois_* files are images of one fresh ciphertext under X -> X^g: besides decrypting them
to the slots in bfv/galois_expected.json, it checks those slots against its own permutation
of the fresh ones, m(X^g)(psi^e) = m(psi^(e g)).

Usage: decrypt_bfv.py    decrypts every ciphertext named in bfv/expected.json and
                         bfv/galois_expected.json and compares
"""
import json
import sys
from pathlib import Path

from generate_ntt import bitrev, forward, negacyclic_product, smallest_root

HERE = Path(__file__).resolve().parent / "bfv"
KINDS = {"parameters": 1, "secret_key": 2, "ciphertext": 5}


def body(data, kind):
    if data[:4] != b"CNET" or data[4] != 1 or data[5] != KINDS[kind] or data[6:8] != b"\0\0":
        raise ValueError(f"bad {kind} header")
    return int.from_bytes(data[8:16], "little"), data[16:]


def fnv1a(words):
    h = 0xcbf29ce484222325
    for w in words:
        for b in w.to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001b3) % (1 << 64)
    return h


def parse_parameters(data):
    ident, b = body(data, "parameters")
    n, t, k = int.from_bytes(b[0:4], "little"), int.from_bytes(b[4:8], "little"), b[8]
    primes = [int.from_bytes(b[9 + 4 * i:13 + 4 * i], "little") for i in range(k)]
    rest = b[9 + 4 * k:]
    special = []
    if rest:
        s = rest[0]
        special = [int.from_bytes(rest[1 + 4 * i:5 + 4 * i], "little") for i in range(s)]
        if s == 0 or len(rest) != 1 + 4 * s:
            raise ValueError("bad special primes")
    # The special primes, if any, follow their count (a count is never a 30-bit prime).
    words = [n, t] + primes + ([len(special)] + special if special else [])
    if fnv1a(words) != ident:
        raise ValueError("parameter identifier mismatch")
    return ident, n, t, primes


def unpack(data, offset, n, q):
    bits = q.bit_length()
    length = (n * bits + 7) // 8
    value = int.from_bytes(data[offset:offset + length], "little")
    limb = [(value >> (bits * j)) & ((1 << bits) - 1) for j in range(n)]
    if any(x >= q for x in limb):
        raise ValueError("residue not below its prime")
    return limb, offset + length


def parse_secret_key(data, ident, n):
    found, b = body(data, "secret_key")
    assert found == ident, "secret key for other parameters"
    codes = [(b[j // 4] >> (2 * (j % 4))) & 3 for j in range(n)]
    return [{0: 0, 1: 1, 3: -1}[c] for c in codes]


def parse_ciphertext(data, ident, n, primes):
    found, b = body(data, "ciphertext")
    assert found == ident, "ciphertext for other parameters"
    level, size = b[0], b[1]
    offset, polys = 2, []
    for _ in range(size):
        limbs = []
        for q in primes[:level]:
            limb, offset = unpack(b, offset, n, q)
            limbs.append(limb)
        polys.append(limbs)
    assert offset == len(b), "trailing bytes"
    return level, polys


def decrypt(n, t, primes, s, level, polys):
    q_l = primes[:level]
    residues = []
    for i, q in enumerate(q_l):
        psi = smallest_root(q, n)
        s_q = [x % q for x in s]
        acc = list(polys[0][i])
        power = s_q
        for k in range(1, len(polys)):
            term = negacyclic_product(polys[k][i], power, q, psi)
            acc = [(a + b) % q for a, b in zip(acc, term)]
            if k + 1 < len(polys):
                power = negacyclic_product(power, s_q, q, psi)
        residues.append(acc)
    big_q = 1
    for q in q_l:
        big_q *= q
    v = [0] * n
    for i, q in enumerate(q_l):
        cofactor = big_q // q
        weight = cofactor * pow(cofactor, -1, q)
        for j in range(n):
            v[j] += residues[i][j] * weight
    m = [((2 * t * (x % big_q) + big_q) // (2 * big_q)) % t for x in v]
    return forward(m, t, smallest_root(t, n))


def galois_permutation(slots, g):
    """The slots of m(X^g): slot i (exponent e = 2 bitrev(i) + 1) holds m(psi^(e g))."""
    n = len(slots)
    bits = n.bit_length() - 1
    return [slots[bitrev((((2 * bitrev(i, bits) + 1) * g) % (2 * n)) // 2, bits)] for i in range(n)]


def check_set(prefix, expected_name):
    ident, n, t, primes = parse_parameters((HERE / f"{prefix}parameters.bin").read_bytes())
    s = parse_secret_key((HERE / f"{prefix}secret_key.bin").read_bytes(), ident, n)
    expected = json.loads((HERE / expected_name).read_text())
    ok = True
    fresh = None
    for name, entry in expected.items():
        slots = entry["slots"] if isinstance(entry, dict) else entry
        level, polys = parse_ciphertext((HERE / name).read_bytes(), ident, n, primes)
        got = decrypt(n, t, primes, s, level, polys)
        match = got == slots
        note = ""
        if isinstance(entry, dict):
            if entry["element"] == 1:
                fresh = got
            else:
                permuted = galois_permutation(fresh, entry["element"])
                match &= got == permuted
                note = f", the fresh slots under X -> X^{entry['element']}"
        ok &= match
        print(f"{name}: level {level}, size {len(polys)}: {'decrypts to the expected slots' + note if match else 'MISMATCH'}")
    return ok


def main():
    ok = check_set("", "expected.json")
    ok &= check_set("galois_", "galois_expected.json")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

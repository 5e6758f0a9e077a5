#!/usr/bin/env python3
"""Independent generator of the NTT known-answer vectors in vectors/ntt/.

Uses only Python's standard library and big integers, and none of the project's code:
its own primality test, prime search, root of unity, a recursive DFT for the transform,
and schoolbook or DFT-based negacyclic products. The definitions it implements are the
ones documented in core/src/ntt.rs:

  * primes: p = 1 mod 2n with 2^(bits-1) < p < 2^bits, largest first; case "index" picks one;
  * psi: the smallest primitive 2n-th root of unity mod p;
  * forward(a)[i] = a(psi^(2*bitrev(i) + 1)) mod p.

Usage: generate_ntt.py            write the vectors and SHA256SUMS
       generate_ntt.py --check    regenerate in memory and compare with the files
"""
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "ntt"
SUMS = HERE / "SHA256SUMS"

# (n, prime bits, index of the prime in descending order)
CASES = [
    (128, 30, 0),
    (1024, 30, 0),
    (1024, 18, 0),
    (4096, 30, 3),
    (8192, 30, 0),
    (8192, 30, 6),
    (8192, 17, 0),
    (16384, 30, 0),
]


def is_prime(n):
    if n < 2:
        return False
    small = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def ntt_prime(bits, n, index):
    step = 2 * n
    candidate = ((1 << bits) - 1) // step * step + 1
    found = []
    while candidate > 1 << (bits - 1):
        if is_prime(candidate):
            found.append(candidate)
            if len(found) > index:
                return candidate
        candidate -= step
    raise ValueError("not enough primes")


def smallest_root(p, n):
    order = 2 * n
    for g in range(2, p):
        x = pow(g, (p - 1) // order, p)
        if pow(x, n, p) == p - 1:
            return min(pow(x, k, p) for k in range(1, order, 2))
    raise ValueError("no root")


def dft(a, w, p):
    """Cyclic DFT: out[k] = sum a[j] w^(jk) mod p (recursive radix 2)."""
    if len(a) == 1:
        return list(a)
    even = dft(a[0::2], w * w % p, p)
    odd = dft(a[1::2], w * w % p, p)
    half = len(a) // 2
    out = [0] * len(a)
    t = 1
    for k in range(half):
        u, v = even[k], odd[k] * t % p
        out[k] = (u + v) % p
        out[k + half] = (u - v) % p
        t = t * w % p
    return out


def bitrev(i, bits):
    return int(format(i, f"0{bits}b")[::-1], 2) if bits else 0


def evaluations(a, p, psi):
    """a(psi^(2k+1)) for k = 0..n-1, in natural order of k."""
    n = len(a)
    twisted = [c * pow(psi, j, p) % p for j, c in enumerate(a)]
    return dft(twisted, psi * psi % p, p)


def forward(a, p, psi):
    n = len(a)
    bits = n.bit_length() - 1
    ev = evaluations(a, p, psi)
    return [ev[bitrev(i, bits)] for i in range(n)]


def negacyclic_product(a, b, p, psi):
    n = len(a)
    if n <= 1024:
        out = [0] * n
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                if i + j < n:
                    out[i + j] += x * y
                else:
                    out[i + j - n] -= x * y
        return [c % p for c in out]
    ea, eb = evaluations(a, p, psi), evaluations(b, p, psi)
    prod = [x * y % p for x, y in zip(ea, eb)]
    # Invert: cyclic inverse DFT, then untwist by psi^-j and scale by 1/n.
    psi_inv = pow(psi, p - 2, p)
    untwisted = dft(prod, psi_inv * psi_inv % p, p)
    n_inv = pow(n, p - 2, p)
    return [c * n_inv * pow(psi_inv, j, p) % p for j, c in enumerate(untwisted)]


def uniform(label, n, p):
    """n values below p from SHAKE-256(label) by rejection sampling of 32-bit words."""
    out = []
    counter = 0
    while len(out) < n:
        block = hashlib.shake_256(f"{label}/{counter}".encode()).digest(4 * 1024)
        counter += 1
        for k in range(0, len(block), 4):
            x = int.from_bytes(block[k:k + 4], "little") & ((1 << p.bit_length()) - 1)
            if x < p and len(out) < n:
                out.append(x)
    return out


def case(n, bits, index):
    p = ntt_prime(bits, n, index)
    psi = smallest_root(p, n)
    a = uniform(f"cryptonets-kat/a/{n}/{p}", n, p)
    b = uniform(f"cryptonets-kat/b/{n}/{p}", n, p)
    # Edge values: every lazy range starts from residues as large as they get.
    a[:4] = [0, 1, p - 1, p - 2]
    b[:4] = [p - 1, p - 1, 0, 1]
    name = f"n{n}_q{p}.json"
    doc = {
        "n": n, "prime_bits": bits, "prime_index": index, "q": p, "psi": psi,
        "a": a, "forward_a": forward(a, p, psi), "b": b,
        "product_ab": negacyclic_product(a, b, p, psi),
    }
    return name, (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def main():
    check = "--check" in sys.argv[1:]
    files = dict(case(*c) for c in CASES)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  ntt/{name}\n" for name, data in sorted(files.items()))
    # Files this script does not generate (the BFV vectors the project writes) keep their lines.
    bfv = sorted(p for p in (HERE / "bfv").glob("*") if p.is_file())
    sums += "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  bfv/{p.name}\n" for p in bfv)
    if check:
        ok = SUMS.read_text() == sums and all((OUT / n).read_bytes() == d for n, d in files.items())
        print("vectors match the generator" if ok else "vectors DIFFER from the generator")
        sys.exit(0 if ok else 1)
    OUT.mkdir(exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    SUMS.write_text(sums)
    print(f"wrote {len(files)} vector files and {SUMS.name}")


if __name__ == "__main__":
    main()

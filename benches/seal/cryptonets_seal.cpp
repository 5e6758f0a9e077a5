// The CryptoNets network of a cryptonets model file (version 1) evaluated with Microsoft SEAL
// 4.1 (BFV) on one batch of 8192 MNIST test images, for `scripts/seal-bench.sh`: the
// baseline our evaluator is measured against in the same run.
//
// What an expert SEAL user would write: n = 8192, a 60/60/38-bit chain plus a 60-bit special
// prime (log2 QP = 218, the 128-bit bound), one plaintext CRT prime per channel (ours), weights
// as constant plaintexts (SEAL's monomial fast path), positive and negative weights in two
// accumulators (small scalars keep the noise small), the convolution squares left
// unrelinearized and switched down one prime, the hidden units relinearized before their
// square, the second square not relinearized, two threads (OpenMP) over each layer's outputs.
// Every logit of every image is checked against plaintext integer inference mod t.
//
// Usage: cryptonets_seal MODEL MNIST_DIR T...  (the model's plaintext CRT primes, as
// `cryptonets model info` prints them; prints one JSON object)

#include <omp.h>
#include <seal/seal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace seal;
using i128 = __int128;

namespace {

constexpr int SIDE = 28, CONV = 13, KERNEL = 5, CLASSES = 10, SLOTS = 8192;

struct Model {
    int maps = 0, hidden = 0, levels = 0;
    std::vector<int16_t> conv, dense1, dense2;  // [map][k], [unit][feature], [class][unit]
    std::vector<i128> conv_bias, dense1_bias, dense2_bias;
};

std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), {});
}

Model read_model(const std::string &path) {
    auto b = read_file(path);
    if (b.size() < 16 || std::string(b.begin(), b.begin() + 4) != "CNMD" || b[4] != 1)
        throw std::runtime_error("not a version 1 cryptonets model");
    Model m;
    m.maps = b[5];
    m.hidden = b[6] | b[7] << 8;
    m.levels = b[8] | b[9] << 8;
    size_t at = 16;
    auto need = [&](size_t bytes) {
        if (at + bytes > b.size()) throw std::runtime_error("truncated model");
    };
    auto words = [&](size_t count, std::vector<int16_t> &out) {
        need(2 * count);
        for (size_t i = 0; i < count; i++, at += 2) out.push_back(int16_t(b[at] | b[at + 1] << 8));
    };
    auto wide = [&](size_t count, std::vector<i128> &out) {
        need(16 * count);
        for (size_t i = 0; i < count; i++, at += 16) {
            unsigned __int128 v = 0;
            for (int j = 15; j >= 0; j--) v = v << 8 | b[at + j];
            out.push_back(i128(v));
        }
    };
    int features = m.maps * CONV * CONV;
    words(size_t(m.maps) * KERNEL * KERNEL, m.conv);
    wide(m.maps, m.conv_bias);
    words(size_t(m.hidden) * features, m.dense1);
    wide(m.hidden, m.dense1_bias);
    words(size_t(CLASSES) * m.hidden, m.dense2);
    wide(CLASSES, m.dense2_bias);
    return m;
}

// Window tap k of output (oy, ox): pixel (2 oy + k / 5 - 1, 2 ox + k % 5 - 1), or -1 (padding).
int tap(int oy, int ox, int k) {
    int y = 2 * oy + k / KERNEL - 1, x = 2 * ox + k % KERNEL - 1;
    return (y < 0 || y >= SIDE || x < 0 || x >= SIDE) ? -1 : y * SIDE + x;
}

std::vector<i128> plain_logits(const Model &m, const uint8_t *pixels) {
    auto q = [&](int p) { return p < 0 ? i128(0) : i128((pixels[p] * m.levels + 127) / 255); };
    std::vector<i128> squares(m.maps * CONV * CONV);
    for (int map = 0; map < m.maps; map++)
        for (int pos = 0; pos < CONV * CONV; pos++) {
            i128 z = m.conv_bias[map];
            for (int k = 0; k < KERNEL * KERNEL; k++) z += m.conv[map * 25 + k] * q(tap(pos / CONV, pos % CONV, k));
            squares[map * CONV * CONV + pos] = z * z;
        }
    std::vector<i128> logits(m.dense2_bias);
    for (int u = 0; u < m.hidden; u++) {
        i128 z = m.dense1_bias[u];
        for (size_t f = 0; f < squares.size(); f++) z += m.dense1[u * squares.size() + f] * squares[f];
        for (int c = 0; c < CLASSES; c++) logits[c] += m.dense2[c * m.hidden + u] * z * z;
    }
    return logits;
}

uint64_t mod(i128 x, uint64_t t) {
    i128 r = x % i128(t);
    return uint64_t(r < 0 ? r + t : r);
}

// out = bias + sum_r weights[r] rows[r]: constant plaintexts, positive and negative weights
// accumulated apart so that every scalar stays small.
void weighted_sum(const Evaluator &ev, const std::vector<const Ciphertext *> &rows,
                  const std::vector<int64_t> &weights, i128 bias, uint64_t t, Ciphertext &out) {
    Ciphertext pos, neg, product;
    bool has_pos = false, has_neg = false;
    for (size_t r = 0; r < rows.size(); r++) {
        int64_t w = weights[r];
        if (w == 0) continue;
        Plaintext scalar(1);
        scalar[0] = uint64_t(w < 0 ? -w : w);
        ev.multiply_plain(*rows[r], scalar, product);
        Ciphertext &acc = w > 0 ? pos : neg;
        bool &has = w > 0 ? has_pos : has_neg;
        if (has) ev.add_inplace(acc, product); else acc = product;
        has = true;
    }
    if (!has_pos) throw std::runtime_error("an output with no positive weight");
    out = pos;
    if (has_neg) ev.sub_inplace(out, neg);
    Plaintext constant(1);
    constant[0] = mod(bias, t);
    ev.add_plain_inplace(out, constant);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s MODEL MNIST_DIR T...\n", argv[0]);
        return 2;
    }
    Model m = read_model(argv[1]);
    auto images = read_file(std::string(argv[2]) + "/t10k-images-idx3-ubyte");
    if (images.size() < 16 + size_t(SLOTS) * SIDE * SIDE) throw std::runtime_error("short MNIST file");
    const uint8_t *pixels = images.data() + 16;
    std::vector<std::vector<i128>> expected(SLOTS);
    for (int i = 0; i < SLOTS; i++) expected[i] = plain_logits(m, pixels + i * SIDE * SIDE);
    std::vector<uint64_t> primes;
    for (int a = 3; a < argc; a++) primes.push_back(std::stoull(argv[a]));
    double eval_seconds = 0, square_relin_ms = 0;
    int min_budget = 1 << 30;
    size_t exact = 0;
    int threads = 1;
#pragma omp parallel
#pragma omp single
    threads = omp_get_num_threads();
    for (uint64_t t : primes) {
        EncryptionParameters parms(scheme_type::bfv);
        parms.set_poly_modulus_degree(SLOTS);
        parms.set_coeff_modulus(CoeffModulus::Create(SLOTS, {60, 60, 38, 60}));
        parms.set_plain_modulus(t);
        SEALContext context(parms, true, sec_level_type::tc128);
        KeyGenerator keygen(context);
        SecretKey sk = keygen.secret_key();
        RelinKeys relin;
        keygen.create_relin_keys(relin);
        Encryptor encryptor(context, sk);
        Decryptor decryptor(context, sk);
        Evaluator ev(context);
        BatchEncoder encoder(context);
        std::vector<Ciphertext> inputs(SIDE * SIDE);
#pragma omp parallel for
        for (int p = 0; p < SIDE * SIDE; p++) {
            std::vector<uint64_t> slots(SLOTS);
            for (int i = 0; i < SLOTS; i++) slots[i] = (pixels[i * SIDE * SIDE + p] * m.levels + 127) / 255;
            Plaintext pt;
            encoder.encode(slots, pt);
            encryptor.encrypt_symmetric(pt, inputs[p]);
        }

        auto start = std::chrono::steady_clock::now();
        int features = m.maps * CONV * CONV;
        std::vector<Ciphertext> squares(features);
#pragma omp parallel for schedule(dynamic)
        for (int f = 0; f < features; f++) {
            int map = f / (CONV * CONV), pos = f % (CONV * CONV);
            std::vector<const Ciphertext *> rows;
            std::vector<int64_t> weights;
            for (int k = 0; k < KERNEL * KERNEL; k++) {
                int p = tap(pos / CONV, pos % CONV, k);
                if (p >= 0) rows.push_back(&inputs[p]), weights.push_back(m.conv[map * 25 + k]);
            }
            weighted_sum(ev, rows, weights, m.conv_bias[map], t, squares[f]);
            ev.square_inplace(squares[f]);
            ev.mod_switch_to_next_inplace(squares[f]);
        }
        std::vector<Ciphertext> hidden(m.hidden);
        std::vector<const Ciphertext *> square_rows;
        for (auto &s : squares) square_rows.push_back(&s);
#pragma omp parallel for schedule(dynamic)
        for (int u = 0; u < m.hidden; u++) {
            std::vector<int64_t> weights(m.dense1.begin() + size_t(u) * features,
                                         m.dense1.begin() + size_t(u + 1) * features);
            weighted_sum(ev, square_rows, weights, m.dense1_bias[u], t, hidden[u]);
            ev.relinearize_inplace(hidden[u], relin);
            ev.square_inplace(hidden[u]);
        }
        std::vector<Ciphertext> logits(CLASSES);
        std::vector<const Ciphertext *> hidden_rows;
        for (auto &h : hidden) hidden_rows.push_back(&h);
#pragma omp parallel for schedule(dynamic)
        for (int c = 0; c < CLASSES; c++) {
            std::vector<int64_t> weights(m.dense2.begin() + size_t(c) * m.hidden,
                                         m.dense2.begin() + size_t(c + 1) * m.hidden);
            weighted_sum(ev, hidden_rows, weights, m.dense2_bias[c], t, logits[c]);
        }
        eval_seconds += seconds_since(start);

        for (int c = 0; c < CLASSES; c++) {
            min_budget = std::min(min_budget, decryptor.invariant_noise_budget(logits[c]));
            Plaintext pt;
            decryptor.decrypt(logits[c], pt);
            std::vector<uint64_t> slots;
            encoder.decode(pt, slots);
            for (int i = 0; i < SLOTS; i++) exact += slots[i] == mod(expected[i][c], t);
        }
        // Square + relinearize of one fresh ciphertext at the top level, as `bench he` measures.
        Ciphertext sq = inputs[0];
        auto at = std::chrono::steady_clock::now();
        const int reps = 20;
        for (int r = 0; r < reps; r++) {
            Ciphertext c = inputs[r % inputs.size()];
            ev.square_inplace(c);
            ev.relinearize_inplace(c, relin);
        }
        square_relin_ms = seconds_since(at) * 1e3 / reps;
    }
    bool all_exact = exact == size_t(SLOTS) * CLASSES * primes.size();
    std::printf(
        "{\"library\":\"Microsoft SEAL %d.%d.%d\",\"hexl\":false,\"threads\":%d,\"images\":%d,"
        "\"channels\":%zu,\"coeff_modulus_bits\":[60,60,38,60],\"eval_seconds\":%.4f,"
        "\"square_relinearize_ms\":%.3f,\"min_noise_budget_bits\":%d,\"exact\":%s}\n",
        SEAL_VERSION_MAJOR, SEAL_VERSION_MINOR, SEAL_VERSION_PATCH, threads, SLOTS, primes.size(),
        eval_seconds, square_relin_ms, min_budget, all_exact ? "true" : "false");
    return all_exact ? 0 : 1;
}

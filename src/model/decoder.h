// Incremental decoding with a key/value cache, written against the Backend ops like GPT.
// Tokens are fed one at a time; after each, logits() are the softcapped logits [V] of the
// next token: the same function as GPT's full forward over all tokens fed so far (one
// sequence, rotary positions 0, 1, 2, ..., documents split at EOT as SPEC.md's mask does:
// an EOT opens a new document and sees only itself) under a fixed attention window.
//
// Memory is bounded by the window, not the text: each layer keeps a ring buffer of the
// keys and values of the last `window` positions (row = position % capacity), since no
// query sees further back. Value residual (v1 = layer 0's v of the same token) and the
// U-net skips (encoder outputs of the same token) need no cache: they are per token.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/params.h"

namespace speedrun {

class Decoder {
 public:
  // window >= 1 tokens. max_positions > 0 promises at most that many tokens in all (the
  // cache then holds min(window, max_positions) rows); 0 means no limit.
  Decoder(Backend& backend, const Parameters& params, int64_t window, int64_t max_positions = 0);

  // Appends `token` at position position() and computes logits() for the next one.
  // Throws on a token outside the vocabulary or past max_positions.
  void step(int32_t token);
  // Softcapped logits [V] after the last step(), in double.
  const std::vector<double>& logits() const { return logits_; }
  // Forgets every token (position 0, empty cache).
  void reset();

  int64_t position() const { return pos_; }
  int64_t window() const { return window_; }
  int64_t cache_rows() const { return cap_; }
  size_t cache_bytes() const;  // the key/value ring buffers of all layers

 private:
  Backend& be_;
  const Parameters& p_;
  GPTConfig cfg_;
  int64_t window_, max_positions_, cap_;
  int64_t pos_ = 0, doc_start_ = 0;
  Arena mem_;
  Tensor tok_, emb_, x0_, h_, xmix_, n_, rstd_, rstd_qk_, q_, att_, xmid_, fc_, act_,
      logits_dev_, cos_, sin_;
  Tensor qkv_, qkv0_;  // [1, 3C]: this layer's q_raw | k_raw | v_raw; layer 0's (v1)
  std::vector<Tensor> kc_, vc_, skip_;  // per layer [cap, C]; per encoder layer [1, C]
  std::vector<int32_t> rows_;
  std::vector<double> logits_;
};

}  // namespace speedrun

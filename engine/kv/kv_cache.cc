#include "engine/kv/kv_cache.h"

#include <numeric>

#include "absl/strings/str_format.h"
#include "engine/base/check.h"

namespace skipserve {

SequenceKv::SequenceKv(const LayerPlan& plan)
    : stores_layer_(plan.run_attn), tables_(plan.num_layers()) {}

SequenceKv::~SequenceKv() {
  SKIPSERVE_CHECK(num_blocks_held() == 0)
      << "SequenceKv destroyed while holding " << num_blocks_held()
      << " KV blocks; call KvBlockManager::Release first";
}

int SequenceKv::capacity_tokens(int block_size) const {
  return blocks_per_layer_ * block_size;
}

int SequenceKv::num_blocks_held() const {
  int n = 0;
  for (const auto& table : tables_) n += static_cast<int>(table.size());
  return n;
}

KvBlockManager::KvBlockManager(int num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  SKIPSERVE_CHECK(num_blocks >= 0 && block_size > 0);
  free_.resize(num_blocks);
  // A stack whose top is block 0, so fresh sequences get low ids first.
  std::iota(free_.rbegin(), free_.rend(), 0);
}

int KvBlockManager::num_free() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_.size());
}

int KvBlockManager::BlocksNeeded(const SequenceKv& seq, int num_tokens) const {
  const int per_layer = (num_tokens + block_size_ - 1) / block_size_;
  const int extra = std::max(0, per_layer - seq.blocks_per_layer_);
  int stored_layers = 0;
  for (bool stores : seq.stores_layer_) stored_layers += stores ? 1 : 0;
  return extra * stored_layers;
}

absl::Status KvBlockManager::Reserve(SequenceKv& seq, int num_tokens) {
  const int per_layer = (num_tokens + block_size_ - 1) / block_size_;
  if (per_layer <= seq.blocks_per_layer_) return absl::OkStatus();
  const int needed = BlocksNeeded(seq, num_tokens);
  absl::MutexLock lock(&mu_);
  if (needed > static_cast<int>(free_.size())) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "KV cache: %d blocks needed for %d tokens, %d of %d free", needed,
        num_tokens, free_.size(), num_blocks_));
  }
  for (int layer = 0; layer < seq.num_layers(); ++layer) {
    if (!seq.stores_layer_[layer]) continue;
    auto& table = seq.tables_[layer];
    while (static_cast<int>(table.size()) < per_layer) {
      table.push_back(free_.back());
      free_.pop_back();
    }
  }
  seq.blocks_per_layer_ = per_layer;
  return absl::OkStatus();
}

void KvBlockManager::Release(SequenceKv& seq) {
  absl::MutexLock lock(&mu_);
  for (auto& table : seq.tables_) {
    free_.insert(free_.end(), table.rbegin(), table.rend());
    table.clear();
  }
  seq.blocks_per_layer_ = 0;
  SKIPSERVE_CHECK(static_cast<int>(free_.size()) <= num_blocks_)
      << "KV blocks released twice";
}

}  // namespace skipserve

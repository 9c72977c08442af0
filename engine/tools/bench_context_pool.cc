#include "engine/tools/bench_context_pool.h"

#include <algorithm>
#include <chrono>
#include <tuple>

#include "absl/strings/str_format.h"
#include "engine/tools/bench_suite.h"

namespace skipserve::bench {

int32_t BenchToken(int position, int vocab_size) {
  return static_cast<int32_t>((static_cast<int64_t>(position) * 7919 + 13) %
                              vocab_size);
}

bool ContextPool::Key::operator<(const Key& o) const {
  return std::tie(plan, length) < std::tie(o.plan, o.length);
}

struct ContextPool::Pending {
  const LayerPlan* plan;
  SequenceKv* seq;
  int done = 0;  // tokens written
};

ContextPool::ContextPool(KvBlockManager* kv, int vocab_size)
    : kv_(kv), vocab_size_(vocab_size) {}

ContextPool::~ContextPool() {
  for (auto& [key, seqs] : contexts_) {
    for (auto& seq : seqs) kv_->Release(*seq);
  }
}

const LayerPlan* ContextPool::Intern(const LayerPlan& plan) {
  std::unique_ptr<LayerPlan>& p = plans_[plan.Canonical()];
  if (p == nullptr) p = std::make_unique<LayerPlan>(plan);
  return p.get();
}

std::vector<std::unique_ptr<SequenceKv>>& ContextPool::Of(const LayerPlan* plan,
                                                          int length) {
  return contexts_[Key{plan->Canonical(), length}];
}

bool ContextPool::MakeFree(int64_t blocks) { return MakeFree(blocks, {}); }

bool ContextPool::MakeFree(int64_t blocks, const std::map<Key, int>& keep) {
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& [key, seqs] : contexts_) {
      const auto it = keep.find(key);
      if ((pass == 0) != (it == keep.end())) continue;
      const size_t spare = it == keep.end() ? 0 : it->second;
      while (seqs.size() > spare && kv_->num_free() < blocks) {
        kv_->Release(*seqs.back());
        seqs.pop_back();
      }
    }
  }
  return kv_->num_free() >= blocks;
}

int64_t ContextPool::BlocksFor(const std::map<Key, int>& keep, int reserve) {
  int64_t blocks = 0;
  for (const auto& [key, count] : keep) {
    const LayerPlan* plan = plans_[key.plan].get();
    auto& seqs = contexts_[key];
    for (int i = 0; i < count; ++i) {
      blocks += i < static_cast<int>(seqs.size())
                    ? kv_->BlocksNeeded(*seqs[i], reserve)
                    : BlocksPerSequence(*plan, reserve, kv_->block_size());
    }
  }
  return blocks;
}

absl::StatusOr<ContextPool::PrefillStats> ContextPool::Ensure(
    const Needs& needs, int length, int reserve, int prefill_tokens,
    absl::FunctionRef<absl::Status(const Batch&)> forward) {
  std::map<Key, int> keep;
  for (const auto& [plan, count] : needs) {
    const Key key{plan->Canonical(), length};
    keep[key] = std::max(keep[key], count);
  }
  const int64_t blocks = BlocksFor(keep, reserve);
  if (!MakeFree(blocks, keep)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d more KV blocks needed; %d of the pool's %d are free", blocks,
        kv_->num_free(), kv_->num_blocks()));
  }
  std::vector<Pending> pending;
  for (const auto& [key, count] : keep) {
    const LayerPlan* plan = plans_[key.plan].get();
    auto& seqs = contexts_[key];
    for (int i = 0; i < count; ++i) {
      if (i >= static_cast<int>(seqs.size())) {
        seqs.push_back(std::make_unique<SequenceKv>(*plan));
        pending.push_back({plan, seqs.back().get()});
      }
      if (absl::Status s = kv_->Reserve(*seqs[i], reserve); !s.ok()) {
        Drop(pending);
        return s;
      }
    }
  }
  if (pending.empty()) return PrefillStats{};
  return Prefill(pending, length, prefill_tokens, forward);
}

absl::StatusOr<ContextPool::PrefillStats> ContextPool::Prefill(
    std::vector<Pending>& pending, int length, int prefill_tokens,
    absl::FunctionRef<absl::Status(const Batch&)> forward) {
  const auto start = std::chrono::steady_clock::now();
  const int budget = std::max(1, prefill_tokens);
  PrefillStats stats;
  stats.sequences = pending.size();
  stats.tokens = static_cast<int64_t>(length) * pending.size();
  absl::Status status;
  for (size_t next = 0; next < pending.size() && status.ok();) {
    Batch batch;
    int used = 0;
    for (size_t i = next; i < pending.size() && used < budget; ++i) {
      Pending& p = pending[i];
      const int n = std::min(length - p.done, budget - used);
      std::vector<int32_t> chunk(n);
      for (int k = 0; k < n; ++k)
        chunk[k] = BenchToken(p.done + k, vocab_size_);
      batch.Add(p.plan, p.seq, p.done, chunk);
      p.done += n;
      used += n;
    }
    status = forward(batch);
    ++stats.steps;
    while (next < pending.size() && pending[next].done == length) ++next;
  }
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (status.ok()) return stats;
  Drop(pending);
  return status;
}

void ContextPool::Drop(const std::vector<Pending>& pending) {
  for (auto& [key, seqs] : contexts_) {
    for (auto it = seqs.begin(); it != seqs.end();) {
      const bool dropped =
          std::any_of(pending.begin(), pending.end(),
                      [&](const Pending& p) { return p.seq == it->get(); });
      if (dropped) {
        kv_->Release(**it);
        it = seqs.erase(it);
      } else {
        ++it;
      }
    }
  }
}

std::vector<ContextPool::Row> ContextPool::Rows(const Needs& needs,
                                                bool interleave, int length) {
  std::vector<Row> rows;
  if (interleave) {
    for (int i = 0; i < needs[0].second; ++i) {
      for (const auto& [plan, count] : needs) {
        rows.emplace_back(plan, Of(plan, length)[i].get());
      }
    }
  } else {
    for (const auto& [plan, count] : needs) {
      auto& seqs = Of(plan, length);
      for (int i = 0; i < count; ++i) rows.emplace_back(plan, seqs[i].get());
    }
  }
  return rows;
}

}  // namespace skipserve::bench

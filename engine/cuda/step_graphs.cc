#include "engine/cuda/step_graphs.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {
namespace {

void AppendRange(const IntRange& r, std::string* key) {
  absl::StrAppend(key, r.offset, "+", r.size, ",");
}

// A range whose contents the host reads to launch work (which rows fuse,
// how decode rows are cut into launches): by value.
void AppendContents(const LaunchPlan& plan, const IntRange& r,
                    std::string* key) {
  absl::StrAppend(key, "[");
  for (int i = 0; i < r.size; ++i) absl::StrAppend(key, plan.Data(r)[i], " ");
  absl::StrAppend(key, "]");
}

void AppendRows(const LaunchPlan& plan, const RowSet& rows, std::string* key) {
  absl::StrAppend(key, static_cast<int>(rows.mode), ":", rows.num_rows, "@");
  AppendRange(rows.rows, key);
  AppendContents(plan, rows.rows, key);
}

}  // namespace

std::string StepShapeKey(const LaunchPlan& plan,
                         const std::vector<int>& splits) {
  std::string key =
      absl::StrCat(plan.num_rows, plan.decode_only ? "d" : "p", "|");
  AppendRange(plan.tokens, &key);
  AppendRows(plan, plan.logits, &key);
  // Not the block tables: the kernels find them through the table starts,
  // which index `ints` from its start (launch_plan.h).
  for (size_t layer = 0; layer < plan.attention.size(); ++layer) {
    const AttentionLaunch& a = plan.attention[layer];
    absl::StrAppend(&key, "|L", layer, " s", splits[layer], " ");
    AppendRows(plan, a.rows, &key);
    AppendRange(a.positions, &key);
    AppendRange(a.kv_slots, &key);
    AppendRange(a.table_starts, &key);
    AppendRange(a.decode_runs, &key);
    AppendContents(plan, a.decode_runs, &key);
    AppendRange(a.tiles, &key);
    AppendContents(plan, a.tiles, &key);
    absl::StrAppend(&key, " f");
    AppendRows(plan, plan.ffn[layer], &key);
  }
  return key;
}

StepGraphs::~StepGraphs() { Clear(); }

void StepGraphs::Destroy(Entry& entry) {
  if (entry.exec != nullptr)
    CUDA_LOG_IF_ERROR(cudaGraphExecDestroy(entry.exec));
  entry.exec = nullptr;
}

void StepGraphs::Clear() {
  for (Entry& entry : graphs_) Destroy(entry);
  graphs_.clear();
  by_key_.clear();
}

absl::Status StepGraphs::Run(const std::string& key, cudaStream_t stream,
                             const std::function<absl::Status()>& record) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return Capture(key, stream, record);
  graphs_.splice(graphs_.begin(), graphs_, it->second);  // most recent
  ++replays_;
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graphs_.front().exec, stream));
  return absl::OkStatus();
}

absl::Status StepGraphs::Capture(const std::string& key, cudaStream_t stream,
                                 const std::function<absl::Status()>& record) {
  CUDA_RETURN_IF_ERROR(
      cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  absl::Status recorded = record();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!recorded.ok() || ended != cudaSuccess) {
    if (graph != nullptr) CUDA_LOG_IF_ERROR(cudaGraphDestroy(graph));
    // A launch error inside the capture is also the thread's last error.
    (void)cudaGetLastError();
    if (!recorded.ok()) return recorded;
    return CudaError(ended, "cudaStreamEndCapture", __FILE__, __LINE__);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  CUDA_LOG_IF_ERROR(cudaGraphDestroy(graph));
  if (instantiated != cudaSuccess) {
    return CudaError(instantiated, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  if (graphs_.size() >= capacity_ && !graphs_.empty()) {
    Destroy(graphs_.back());
    by_key_.erase(graphs_.back().key);
    graphs_.pop_back();
  }
  graphs_.push_front(Entry{key, exec});
  by_key_[key] = graphs_.begin();
  ++captures_;
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, stream));
  return absl::OkStatus();
}

}  // namespace skipserve::cuda

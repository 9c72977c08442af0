#include "engine/cuda/step_graphs.h"

#include <utility>

#include "engine/cuda/cuda_check.h"

namespace skipserve::cuda {
namespace {

void AppendRange(const IntRange& r, StepShape* key) {
  key->push_back(r.offset);
  key->push_back(r.size);
}

// A range whose contents the host reads to launch work (which rows fuse,
// how decode rows are cut into launches): by value. (Its size, appended
// first, keeps the key unambiguous.)
void AppendContents(const LaunchPlan& plan, const IntRange& r, StepShape* key) {
  key->insert(key->end(), plan.Data(r), plan.Data(r) + r.size);
}

void AppendRows(const LaunchPlan& plan, const RowSet& rows, StepShape* key) {
  key->push_back(static_cast<int32_t>(rows.mode));
  key->push_back(rows.num_rows);
  AppendRange(rows.rows, key);
  AppendContents(plan, rows.rows, key);
}

}  // namespace

StepShape StepShapeKey(const LaunchPlan& plan, const std::vector<int>& splits) {
  StepShape key = {plan.num_rows, plan.decode_only ? 1 : 0};
  AppendRange(plan.tokens, &key);
  AppendRows(plan, plan.logits, &key);
  // Not the block tables: the kernels find them through the table starts,
  // which index `ints` from its start (launch_plan.h).
  for (size_t layer = 0; layer < plan.attention.size(); ++layer) {
    const AttentionLaunch& a = plan.attention[layer];
    key.push_back(splits[layer]);
    AppendRows(plan, a.rows, &key);
    AppendRange(a.positions, &key);
    AppendRange(a.kv_slots, &key);
    AppendRange(a.table_starts, &key);
    AppendRange(a.decode_runs, &key);
    AppendContents(plan, a.decode_runs, &key);
    AppendRange(a.tiles, &key);
    AppendContents(plan, a.tiles, &key);
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

absl::Status StepGraphs::Run(const StepShape& key, cudaStream_t stream,
                             const std::function<absl::Status()>& record) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return Capture(key, stream, record);
  graphs_.splice(graphs_.begin(), graphs_, it->second);  // most recent
  ++replays_;
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graphs_.front().exec, stream));
  return absl::OkStatus();
}

absl::Status StepGraphs::Capture(const StepShape& key, cudaStream_t stream,
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

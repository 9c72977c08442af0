// The CUDA emulator's memory: allocations (poisoned with 0xFF) and copies,
// with CUDA's synchronisation rules for each kind of copy (see
// include/cuda_runtime.h for the semantics it keeps and the ones it sharpens).

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/cuda/emulator/emulator.h"
#include "engine/cuda/emulator/runtime_internal.h"
#include "engine/cuda/emulator/state.h"

namespace skipserve::emu {
namespace internal {
namespace {

// Where a copy of `bytes` may go from `src` to `dst` for `kind`; "" or what
// is wrong.
std::string CheckCopy(void* dst, const void* src, size_t bytes,
                      cudaMemcpyKind kind, Memory* to, Memory* from) {
  *to = Classify(dst, bytes);
  *from = Classify(src, bytes);
  if (*to == Memory::kStraddles || *from == Memory::kStraddles) {
    return "the range runs past the end of an allocation";
  }
  const bool dst_device = *to == Memory::kDevice;
  const bool src_device = *from == Memory::kDevice;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (!dst_device)
        return "HostToDevice: the destination is not device memory";
      if (src_device) return "HostToDevice: the source is device memory";
      break;
    case cudaMemcpyDeviceToHost:
      if (!src_device) return "DeviceToHost: the source is not device memory";
      if (dst_device) return "DeviceToHost: the destination is device memory";
      break;
    case cudaMemcpyDeviceToDevice:
      if (!src_device || !dst_device) {
        return "DeviceToDevice: an end is not device memory";
      }
      break;
    case cudaMemcpyHostToHost:
      if (src_device || dst_device)
        return "HostToHost: an end is device memory";
      break;
    case cudaMemcpyDefault:
      break;
    default:
      return "unknown cudaMemcpyKind";
  }
  return "";
}

// The copy itself, queued on `stream` or done now, as CUDA's API
// synchronisation rules say (cudaMemcpy and cudaMemcpyAsync differ only in
// the stream and in `sync`, which the synchronous cudaMemcpy sets).
cudaError_t Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                 cudaStream_t handle, bool sync, const char* name) {
  if (cudaError_t e = EnterApi(name); e != cudaSuccess) return e;
  State& s = GetState();
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  Memory to, from;
  const std::string error = CheckCopy(dst, src, bytes, kind, &to, &from);
  if (!error.empty()) {
    return Misuse(cudaErrorInvalidValue, std::string(name) + ": " + error);
  }
  const bool to_host = to != Memory::kDevice;
  const bool from_host = from != Memory::kDevice;
  // Counted when the copy runs (a graph's copy node each time it replays).
  std::atomic<int64_t>* uploaded =
      from_host && !to_host ? &s.host_to_device_bytes : nullptr;
  const auto count = [uploaded, bytes] {
    if (uploaded != nullptr) *uploaded += static_cast<int64_t>(bytes);
  };
  // A graph replays a copy later: only device and pinned memory can take
  // part, and nothing may wait for it.
  if (sync || to == Memory::kPageable || from == Memory::kPageable) {
    if (cudaError_t e = RefuseDuringCapture(stream, name); e != cudaSuccess) {
      return e;
    }
  }
  if (to_host && from_host) {  // fully synchronous
    Flush(*stream);
    std::memmove(dst, src, bytes);
  } else if (from_host && from == Memory::kPageable) {
    // Staged now (the caller may reuse its buffer at once); lands later.
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src),
        static_cast<const unsigned char*>(src) + bytes);
    EnqueueOn(*stream, [dst, staged, count] {
      std::memcpy(dst, staged->data(), staged->size());
      count();
    });
  } else if (from_host && sync) {  // from pinned memory, synchronous
    Flush(*stream);
    std::memcpy(dst, src, bytes);
    count();
  } else if (to_host && (to == Memory::kPageable || sync)) {
    // Returns once the copy is done.
    EnqueueOn(*stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
    Flush(*stream);
  } else {
    // Pinned host memory both ways (async) and device to device: read and
    // written when the stream gets there.
    EnqueueOn(*stream, [dst, src, bytes, count] {
      std::memmove(dst, src, bytes);
      count();
    });
  }
  return s.sticky != cudaSuccess ? Fail(s.sticky) : cudaSuccess;
}

cudaError_t Set(void* ptr, int value, size_t bytes, cudaStream_t handle,
                const char* name) {
  if (cudaError_t e = EnterApi(name); e != cudaSuccess) return e;
  Stream* stream = Resolve(handle);
  if (stream == nullptr) return Fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (Classify(ptr, bytes) != Memory::kDevice) {
    return Misuse(cudaErrorInvalidValue,
                  std::string(name) + ": the range is not device memory");
  }
  EnqueueOn(*stream, [ptr, value, bytes] { std::memset(ptr, value, bytes); });
  return cudaSuccess;
}

}  // namespace

Memory Classify(const void* ptr, size_t bytes) {
  State& s = GetState();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(ptr);
  for (const auto* map : {&s.device_memory, &s.pinned_memory}) {
    auto it = map->upper_bound(begin);
    if (it == map->begin()) continue;
    --it;
    const uintptr_t end = it->first + it->second.bytes;
    if (begin >= end) continue;
    if (begin + bytes > end) return Memory::kStraddles;
    return map == &s.device_memory ? Memory::kDevice : Memory::kPinned;
  }
  return Memory::kPageable;
}

bool IsDeviceRange(const void* ptr, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(GetState().mu);
  return Classify(ptr, bytes) == Memory::kDevice;
}

}  // namespace internal

}  // namespace skipserve::emu

using skipserve::emu::internal::EnterApi;
using skipserve::emu::internal::Fail;
using skipserve::emu::internal::GetState;
using skipserve::emu::internal::Memory;
using skipserve::emu::internal::Misuse;
using skipserve::emu::internal::RefuseDuringCapture;
using skipserve::emu::internal::State;
using Lock = std::lock_guard<std::recursive_mutex>;

extern "C" {

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  State& s = GetState();
  Lock lock(s.mu);
  if (ptr == nullptr) return Fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (cudaError_t e = EnterApi("cudaMalloc"); e != cudaSuccess) return e;
  if (cudaError_t e = RefuseDuringCapture(nullptr, "cudaMalloc");
      e != cudaSuccess) {
    return e;
  }
  if (bytes == 0) return cudaSuccess;
  if (bytes > s.memory_bytes - s.allocated) {
    return Fail(cudaErrorMemoryAllocation);
  }
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0) {
    return Fail(cudaErrorMemoryAllocation);
  }
  std::memset(p, 0xff, bytes);  // NaN in every float format
  s.device_memory[reinterpret_cast<uintptr_t>(p)] = {p, bytes};
  s.allocated += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  State& s = GetState();
  Lock lock(s.mu);
  if (ptr == nullptr) return cudaSuccess;
  auto it = s.device_memory.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.device_memory.end()) {
    return Misuse(cudaErrorInvalidValue,
                  "cudaFree: not a pointer cudaMalloc returned");
  }
  if (cudaError_t e = RefuseDuringCapture(nullptr, "cudaFree");
      e != cudaSuccess) {
    return e;
  }
  // cudaFree waits for the device; after a fault it still releases the
  // memory but reports the fault.
  skipserve::emu::internal::FlushAll();
  s.allocated -= it->second.bytes;
  s.device_memory.erase(it);
  std::free(ptr);
  return s.sticky != cudaSuccess ? Fail(s.sticky) : cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  State& s = GetState();
  Lock lock(s.mu);
  if (ptr == nullptr) return Fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (cudaError_t e = EnterApi("cudaMallocHost"); e != cudaSuccess) return e;
  if (bytes == 0) return cudaSuccess;
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes) != 0) {
    return Fail(cudaErrorMemoryAllocation);
  }
  std::memset(p, 0xff, bytes);
  s.pinned_memory[reinterpret_cast<uintptr_t>(p)] = {p, bytes};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  return cudaMallocHost(ptr, bytes);
}

cudaError_t cudaFreeHost(void* ptr) {
  State& s = GetState();
  Lock lock(s.mu);
  if (ptr == nullptr) return cudaSuccess;
  auto it = s.pinned_memory.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.pinned_memory.end()) {
    return Misuse(cudaErrorInvalidValue,
                  "cudaFreeHost: not a pointer cudaMallocHost returned");
  }
  skipserve::emu::internal::FlushAll();
  s.pinned_memory.erase(it);
  std::free(ptr);
  return s.sticky != cudaSuccess ? Fail(s.sticky) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  State& s = GetState();
  Lock lock(s.mu);
  if (cudaError_t e = EnterApi("cudaMemGetInfo"); e != cudaSuccess) return e;
  if (free == nullptr || total == nullptr) return Fail(cudaErrorInvalidValue);
  *free = s.memory_bytes - s.allocated;
  *total = s.memory_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes,
                       cudaMemcpyKind kind) {
  Lock lock(GetState().mu);
  return skipserve::emu::internal::Copy(dst, src, bytes, kind, nullptr,
                                        /*sync=*/true, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes,
                            cudaMemcpyKind kind, cudaStream_t stream) {
  Lock lock(GetState().mu);
  return skipserve::emu::internal::Copy(dst, src, bytes, kind, stream,
                                        /*sync=*/false, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  Lock lock(GetState().mu);
  return skipserve::emu::internal::Set(ptr, value, bytes, nullptr,
                                       "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes,
                            cudaStream_t stream) {
  Lock lock(GetState().mu);
  return skipserve::emu::internal::Set(ptr, value, bytes, stream,
                                       "cudaMemsetAsync");
}

}  // extern "C"

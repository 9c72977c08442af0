// The CUDA emulator's device: its configuration, errors (the last error and
// the sticky error of a device fault), properties, and the emulator's
// controls (emulator.h).

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "engine/cuda/emulator/emulator.h"
#include "engine/cuda/emulator/runtime_internal.h"
#include "engine/cuda/emulator/state.h"

namespace skipserve::emu {
namespace internal {
namespace {

thread_local cudaError_t t_last_error = cudaSuccess;

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  int parsed = 0;
  const char* end = value + std::strlen(value);
  const auto [stop, error] = std::from_chars(value, end, parsed);
  if (error != std::errc() || stop != end || parsed < 0 || parsed > (1 << 30)) {
    std::fprintf(stderr, "skipserve CUDA emulator: %s=%s is not a count\n",
                 name, value);
    std::abort();
  }
  return parsed;
}

State* Configure() {
  State* s = new State;
  s->legacy_stream.legacy = true;
  s->devices = EnvInt("SKIPSERVE_EMU_DEVICES", 1);
  s->memory_bytes = static_cast<size_t>(EnvInt("SKIPSERVE_EMU_MEMORY_MB", 8192))
                    << 20;
  s->multiprocessors = EnvInt("SKIPSERVE_EMU_SMS", 132);
  const char* order = std::getenv("SKIPSERVE_EMU_ORDER");
  if (order != nullptr && std::strcmp(order, "reverse") == 0) {
    s->order = FiberOrder::kReverse;
  } else if (order != nullptr && *order != '\0' &&
             std::strcmp(order, "forward") != 0) {
    std::fprintf(stderr,
                 "skipserve CUDA emulator: SKIPSERVE_EMU_ORDER=%s: use "
                 "forward or reverse\n",
                 order);
    std::abort();
  }
  return s;
}

}  // namespace

State& GetState() {
  static State* const state = Configure();
  return *state;
}

cudaError_t Fail(cudaError_t error) {
  t_last_error = error;
  return error;
}

cudaError_t Misuse(cudaError_t error, const std::string& message) {
  std::fprintf(stderr, "skipserve CUDA emulator: %s (%s)\n", message.c_str(),
               cudaGetErrorName(error));
  return Fail(error);
}

cudaError_t EnterApi(const char* name) {
  State& s = GetState();
  if (s.sticky != cudaSuccess) return Fail(s.sticky);
  if (s.injected.empty()) return cudaSuccess;
  auto it = s.injected.find(std::string_view(name));
  if (it == s.injected.end()) return cudaSuccess;
  const cudaError_t error = it->second.error;
  if (--it->second.count <= 0) s.injected.erase(it);
  return Fail(error);
}

cudaError_t& LastError() { return t_last_error; }

void DeviceFault(cudaError_t error, const std::string& what) {
  State& s = GetState();
  std::fprintf(stderr, "skipserve CUDA emulator: device fault (%s): %s\n",
               cudaGetErrorName(error), what.c_str());
  if (s.sticky == cudaSuccess) s.sticky = error;
  s.faults.push_back(what);
  s.legacy_stream.queue.clear();
  for (CUstream_st* stream : s.streams) Resolve(stream)->queue.clear();
}

}  // namespace internal

using internal::GetState;
using internal::State;

void SetFiberOrder(FiberOrder order) {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  s.order = order;
}

FiberOrder GetFiberOrder() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return s.order;
}

void FailNextCalls(std::string_view name, cudaError_t error, int count) {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  s.injected[std::string(name)] = {error, count};
}

int LiveEvents() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return static_cast<int>(s.events.size());
}

int LiveStreams() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return static_cast<int>(s.streams.size());
}

int LiveGraphs() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return s.live_graphs;
}

int64_t HostToDeviceBytes() { return GetState().host_to_device_bytes.load(); }

int LiveAllocations() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return static_cast<int>(s.device_memory.size());
}

size_t AllocatedBytes() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return s.allocated;
}

std::vector<std::string> TakeFaults() {
  State& s = GetState();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return std::exchange(s.faults, {});
}

}  // namespace skipserve::emu

using skipserve::emu::internal::EnterApi;
using skipserve::emu::internal::Fail;
using skipserve::emu::internal::GetState;
using skipserve::emu::internal::LastError;
using skipserve::emu::internal::State;
using Lock = std::lock_guard<std::recursive_mutex>;

extern "C" {

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define SKIPSERVE_EMU_ERROR(name) \
  case name:                      \
    return #name;
    SKIPSERVE_EMU_ERROR(cudaSuccess)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidValue)
    SKIPSERVE_EMU_ERROR(cudaErrorMemoryAllocation)
    SKIPSERVE_EMU_ERROR(cudaErrorInitializationError)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidConfiguration)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidDevicePointer)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidMemcpyDirection)
    SKIPSERVE_EMU_ERROR(cudaErrorNoDevice)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidDevice)
    SKIPSERVE_EMU_ERROR(cudaErrorInvalidResourceHandle)
    SKIPSERVE_EMU_ERROR(cudaErrorIllegalState)
    SKIPSERVE_EMU_ERROR(cudaErrorNotReady)
    SKIPSERVE_EMU_ERROR(cudaErrorIllegalAddress)
    SKIPSERVE_EMU_ERROR(cudaErrorLaunchOutOfResources)
    SKIPSERVE_EMU_ERROR(cudaErrorAssert)
    SKIPSERVE_EMU_ERROR(cudaErrorLaunchFailure)
    SKIPSERVE_EMU_ERROR(cudaErrorNotSupported)
    SKIPSERVE_EMU_ERROR(cudaErrorStreamCaptureUnsupported)
    SKIPSERVE_EMU_ERROR(cudaErrorStreamCaptureInvalidated)
    SKIPSERVE_EMU_ERROR(cudaErrorUnknown)
#undef SKIPSERVE_EMU_ERROR
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    default:
      return cudaGetErrorName(error);
  }
}

cudaError_t cudaGetLastError() {
  State& s = GetState();
  Lock lock(s.mu);
  const cudaError_t last = std::exchange(LastError(), cudaSuccess);
  return s.sticky != cudaSuccess ? s.sticky : last;
}

cudaError_t cudaPeekAtLastError() {
  State& s = GetState();
  Lock lock(s.mu);
  return s.sticky != cudaSuccess ? s.sticky : LastError();
}

cudaError_t cudaGetDeviceCount(int* count) {
  State& s = GetState();
  Lock lock(s.mu);
  if (count == nullptr) return Fail(cudaErrorInvalidValue);
  *count = s.devices;
  return s.devices == 0 ? Fail(cudaErrorNoDevice) : cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  State& s = GetState();
  Lock lock(s.mu);
  if (s.devices == 0) return Fail(cudaErrorNoDevice);
  if (device < 0 || device >= s.devices) return Fail(cudaErrorInvalidDevice);
  return EnterApi("cudaSetDevice");
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return Fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  State& s = GetState();
  Lock lock(s.mu);
  if (prop == nullptr) return Fail(cudaErrorInvalidValue);
  if (device < 0 || device >= s.devices) return Fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "skipserve CUDA emulator");
  prop->totalGlobalMem = s.memory_bytes;
  prop->sharedMemPerBlock = 48 << 10;
  prop->sharedMemPerBlockOptin = 227 << 10;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = s.multiprocessors;
  prop->l2CacheSize = 50 << 20;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr,
                                   int device) {
  cudaDeviceProp prop;
  if (cudaError_t e = cudaGetDeviceProperties(&prop, device);
      e != cudaSuccess) {
    return e;
  }
  if (value == nullptr) return Fail(cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = prop.maxThreadsPerBlock;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(prop.sharedMemPerBlock);
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = prop.warpSize;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = prop.multiProcessorCount;
      return cudaSuccess;
    case cudaDevAttrL2CacheSize:
      *value = prop.l2CacheSize;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = prop.major;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = prop.minor;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(prop.sharedMemPerBlockOptin);
      return cudaSuccess;
  }
  return Fail(cudaErrorInvalidValue);
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  if (version == nullptr) return Fail(cudaErrorInvalidValue);
  *version = 13000;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  return cudaRuntimeGetVersion(version);
}

}  // extern "C"

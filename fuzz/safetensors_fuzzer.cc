// Fuzzes the safetensors reader (engine/model/safetensors.h): the input is
// a whole file (8-byte header length, JSON header, data), handed to
// SafetensorsFile::Open through an in-memory file (memfd). For every file
// Open accepts, each tensor's bytes lie inside the data, in file order,
// without overlap, and hold exactly dtype size x elements; each is read
// end to end (AddressSanitizer checks the reads).

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "engine/base/check.h"
#include "engine/model/dtype.h"
#include "engine/model/safetensors.h"

namespace {

// One memfd for the whole run, truncated and rewritten per input.
int MemFd() {
  static const int fd = [] {
    const int f = memfd_create("safetensors_fuzzer", MFD_CLOEXEC);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

volatile uint8_t g_sink = 0;

void WriteAll(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) std::abort();
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n <= 0) std::abort();
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  WriteAll(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  absl::StatusOr<std::unique_ptr<skipserve::SafetensorsFile>> file =
      skipserve::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;

  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | data[i];
  const uint64_t data_bytes = size - 8 - header;
  uint64_t previous_end = 0;
  uint8_t sum = 0;
  for (const skipserve::TensorInfo& t : (*file)->tensors()) {
    SKIPSERVE_CHECK(t.begin <= t.end && t.end <= data_bytes)
        << t.name << " [" << t.begin << ", " << t.end << ") of " << data_bytes;
    if (t.begin != t.end) {
      SKIPSERVE_CHECK(t.begin >= previous_end) << t.name << " overlaps";
      previous_end = t.end;
    }
    SKIPSERVE_CHECK(t.end - t.begin == static_cast<uint64_t>(t.NumElements()) *
                                           skipserve::DTypeSize(t.dtype))
        << t.name;
    SKIPSERVE_CHECK((*file)->Find(t.name) != nullptr) << t.name;
    const std::span<const std::byte> bytes = (*file)->Data(t);
    SKIPSERVE_CHECK(bytes.size() == t.end - t.begin) << t.name;
    for (std::byte b : bytes) sum ^= static_cast<uint8_t>(b);
  }
  g_sink = sum;  // keeps the reads
  return 0;
}

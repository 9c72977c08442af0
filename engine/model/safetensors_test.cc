#include "engine/model/safetensors.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/testing/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A safetensors file built by hand: length prefix, header text, data.
std::string RawFile(const std::string& header, const std::string& data,
                    uint64_t declared_length) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>(declared_length >> (8 * i));
  return out + header + data;
}
std::string RawFile(const std::string& header, const std::string& data) {
  return RawFile(header, data, header.size());
}

std::vector<std::byte> Bytes(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> out(values.size() * DTypeSize(dtype));
  ConvertFromFloat(dtype, values, out.data());
  return out;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `contents` to a file and expects Open to fail with a message
  // naming the file and every string in `parts`.
  void ExpectBroken(const std::string& contents,
                    const std::vector<std::string>& parts) {
    const std::string path = dir_.File("broken.safetensors");
    testing::WriteFile(path, contents);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(file.status().message());
    EXPECT_THAT(message, HasSubstr(path));
    for (const std::string& part : parts) {
      EXPECT_THAT(message, HasSubstr(part));
    }
  }

  testing::ScratchDir dir_;
};

TEST_F(SafetensorsTest, RoundTripsAllDTypes) {
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.125f, 7.0f, -0.0f};
  const std::vector<float> b = {0.5f, 100.0f, -65504.0f};
  const std::vector<float> c = {1e-3f, 2e10f};
  const auto a_bytes = Bytes(a, DType::kF32);
  const auto b_bytes = Bytes(b, DType::kF16);
  const auto c_bytes = Bytes(c, DType::kBF16);
  const std::vector<TensorToWrite> tensors = {
      {"a", DType::kF32, {2, 3}, a_bytes},
      {"b.weight", DType::kF16, {3}, b_bytes},
      {"c", DType::kBF16, {1, 2, 1}, c_bytes},
      {"empty", DType::kF32, {0, 4}, {}},
  };
  const std::string path = dir_.File("x.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  // The header is padded to 8-byte alignment and the data is contiguous.
  const std::string raw = testing::ReadFile(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(raw.size(),
            8 + n + a_bytes.size() + b_bytes.size() + c_bytes.size());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), 4u);
  for (const TensorToWrite& t : tensors) {
    const TensorInfo* info = (*file)->Find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype);
    EXPECT_EQ(info->shape, t.shape);
    std::span<const std::byte> data = (*file)->Data(*info);
    ASSERT_EQ(data.size(), t.data.size());
    EXPECT_TRUE(std::equal(data.begin(), data.end(), t.data.begin()));
  }
  EXPECT_EQ((*file)->Find("a")->begin, 0u);
  EXPECT_EQ((*file)->Find("a")->NumElements(), 6);
  EXPECT_EQ((*file)->Find("b.weight")->begin, a_bytes.size());
  EXPECT_EQ((*file)->Find("empty")->NumElements(), 0);
  EXPECT_EQ((*file)->Find("missing"), nullptr);

  std::vector<float> back(2);
  ConvertToFloat(DType::kBF16, (*file)->Data(*(*file)->Find("c")).data(), 2,
                 back.data());
  EXPECT_EQ(back[0], BFloat16ToFloat(FloatToBFloat16(1e-3f)));
  EXPECT_EQ(back[1], BFloat16ToFloat(FloatToBFloat16(2e10f)));
}

TEST_F(SafetensorsTest, EmptyFileAndScalars) {
  const std::string path = dir_.File("empty.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());

  // A scalar (shape []) holds one element; hand-written, unpadded header.
  testing::WriteFile(path, RawFile(R"({"s":{"dtype":"F32","shape":[],)"
                                   R"("data_offsets":[0,4]}})",
                                   std::string(4, '\0')));
  file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("s")->NumElements(), 1);
}

TEST_F(SafetensorsTest, WriterRejectsInconsistentTensors) {
  const std::vector<std::byte> six(6);
  const std::vector<TensorToWrite> wrong_size = {{"w", DType::kF32, {2}, six}};
  absl::Status s = WriteSafetensors(dir_.File("w.safetensors"), wrong_size);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"w\""));
  const std::vector<TensorToWrite> repeated = {{"r", DType::kF16, {3}, six},
                                               {"r", DType::kF16, {3}, six}};
  EXPECT_FALSE(WriteSafetensors(dir_.File("r.safetensors"), repeated).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_.File("w.safetensors")));
}

TEST_F(SafetensorsTest, MissingFile) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(dir_.File("nope.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()),
              HasSubstr("nope.safetensors"));
}

TEST_F(SafetensorsTest, RejectsBrokenFraming) {
  ExpectBroken("", {"shorter than"});
  ExpectBroken(std::string("\x10\0\0", 3), {"shorter than"});
  ExpectBroken(RawFile("{}", "", 3), {"header length 3"});
  ExpectBroken(RawFile("{}", "", 1ull << 40), {"exceeds the limit"});
  ExpectBroken(RawFile("{}", "", 200'000'000), {"exceeds the limit"});
  ExpectBroken(RawFile("", ""), {"not valid JSON"});
  ExpectBroken(RawFile("{\"a\": ", ""), {"not valid JSON"});
  ExpectBroken(RawFile("[1, 2]", ""), {"not a JSON object"});
  ExpectBroken(RawFile(R"({"__metadata__": {"format": 1}})", ""),
               {"__metadata__", "format"});
  ExpectBroken(RawFile(R"({"__metadata__": []})", ""), {"__metadata__"});
}

TEST_F(SafetensorsTest, RejectsBrokenTensorEntries) {
  const std::string data(16, '\0');
  auto entry = [&](const std::string& body) {
    return RawFile("{\"t.weight\": " + body + "}", data);
  };
  ExpectBroken(entry("3"), {"t.weight", "not a JSON object"});
  ExpectBroken(entry(R"({"dtype":"I8","shape":[16],"data_offsets":[0,16]})"),
               {"t.weight", "I8"});
  ExpectBroken(entry(R"({"dtype":"F64","shape":[2],"data_offsets":[0,16]})"),
               {"t.weight", "F64"});
  ExpectBroken(
      entry(R"({"dtype":"float32","shape":[4],"data_offsets":[0,16]})"),
      {"t.weight", "float32"});
  ExpectBroken(entry(R"({"shape":[4],"data_offsets":[0,16]})"),
               {"t.weight", "dtype"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"),
               {"t.weight", "shape"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"),
               {"t.weight", "shape"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":["4"],"data_offsets":[0,16]})"),
               {"t.weight", "shape"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})"),
               {"t.weight", "shape"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"),
               {"t.weight", "data_offsets"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16,16]})"),
               {"t.weight", "data_offsets"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[0,"16"]})"),
               {"t.weight", "data_offsets"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[-1,15]})"),
               {"t.weight", "data_offsets"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[0],"data_offsets":[16,0]})"),
               {"t.weight", "begin after end"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[5],"data_offsets":[0,20]})"),
               {"t.weight", "truncated"});
  ExpectBroken(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})"),
               {"t.weight", "needs 12"});
  ExpectBroken(entry(R"({"dtype":"F16","shape":[4],"data_offsets":[0,16]})"),
               {"t.weight", "needs 8"});
  // A shape whose byte count overflows 64 bits.
  ExpectBroken(entry(R"({"dtype":"F32","shape":[4294967296,4294967296],)"
                     R"("data_offsets":[0,16]})"),
               {"t.weight", "2^64"});
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string data(16, '\0');
  ExpectBroken(
      RawFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
              data),
      {"\"b\"", "overlap", "\"a\""});
  ExpectBroken(
      RawFile(R"({"x":{"dtype":"F16","shape":[8],"data_offsets":[0,16]},)"
              R"("y":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}})",
              data),
      {"\"y\"", "overlap", "\"x\""});
  // Adjacent tensors and empty tensors do not overlap.
  const std::string path = dir_.File("ok.safetensors");
  testing::WriteFile(
      path, RawFile(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                    R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                    R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    data));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 3u);
  EXPECT_EQ((*file)->tensors()[0].name, "a");  // file order
  EXPECT_EQ((*file)->tensors()[2].name, "b");
}

TEST_F(SafetensorsTest, TruncatedCopyOfValidFileFails) {
  const std::vector<float> values(100, 1.5f);
  const auto bytes = Bytes(values, DType::kF32);
  const std::vector<TensorToWrite> tensors = {
      {"first", DType::kF32, {50}, std::span(bytes).first(200)},
      {"second", DType::kF32, {10, 5}, std::span(bytes).subspan(200)}};
  const std::string path = dir_.File("valid.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  const std::string raw = testing::ReadFile(path);
  ASSERT_TRUE(SafetensorsFile::Open(path).ok());

  // Cut inside the data of the last tensor, and inside the header.
  ExpectBroken(raw.substr(0, raw.size() - 1), {"second", "truncated"});
  ExpectBroken(raw.substr(0, 20), {"header length"});
}

}  // namespace
}  // namespace skipserve

#include "server/tokenize_call.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/call_util.h"
#include "server/text_limits.h"
#include "skipserve/v1/inference.pb.h"

namespace skipserve::server {
namespace {

class TokenizeCall final : public UnaryCall<v1::TokenizeResponse> {
 public:
  using UnaryCall::UnaryCall;
  void Reject(const absl::Status& status) { Respond(status); }
};

// Answers `call` with `request.text()` tokenized.
void Tokenize(const Tokenizer& tokenizer, const v1::TokenizeRequest& request,
              TokenizeCall* call) {
  Tokenizer::EncodeOptions options;
  options.add_bos = request.add_bos();
  absl::StatusOr<std::vector<int>> ids =
      tokenizer.Encode(request.text(), options);
  if (!ids.ok()) {
    call->Respond(ids.status());
    return;
  }
  v1::TokenizeResponse* out = call->response();
  out->mutable_token_ids()->Reserve(static_cast<int>(ids->size()));
  for (int id : *ids) {
    out->add_token_ids(static_cast<uint32_t>(id));
    out->add_pieces(std::string(tokenizer.IdToPiece(id)));
  }
  call->Respond(absl::OkStatus());
}

}  // namespace

grpc::ServerUnaryReactor* HandleTokenize(const HandlerEnv& env,
                                         grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer& request,
                                         grpc::ByteBuffer* response) {
  const auto call = CallRef<TokenizeCall>::New(response);
  v1::TokenizeRequest typed;
  absl::Status status = AdmitAndParse(
      env, *context, request, "/skipserve.v1.Inference/Tokenize", &typed);
  if (status.ok()) status = ValidateTokenize(typed, env.context);
  if (!status.ok()) {
    call->Reject(status);
    return call.get();
  }
  TokenizeCall* const raw = call.get();
  RunSized(env, call, std::move(typed),
           [&env, raw](const v1::TokenizeRequest& typed) {
             Tokenize(*env.context.tokenizer, typed, raw);
           });
  return call.get();
}

}  // namespace skipserve::server

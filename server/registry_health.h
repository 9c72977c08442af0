#ifndef SKIPSERVE_SERVER_REGISTRY_HEALTH_H_
#define SKIPSERVE_SERVER_REGISTRY_HEALTH_H_

// Publishes the policy registry's store health on gRPC's health service:
// the service "skipserve.v1.Policies" is SERVING while the registry's store
// can be reached (admin changes can be made) and NOT_SERVING while it
// cannot. The server's overall health ("") is not touched: a replica whose
// etcd is down keeps serving inference from its last-known registry, so
// load balancers and readiness probes must keep sending it traffic.
//
// A thread reads PolicyRegistry::StoreStatus() (which never waits on the
// store) every `period` and sets the status when it changed. Stop() (or the
// destructor) ends it; call it before the health service turns everything
// NOT_SERVING for a drain, so the two do not race.

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/admin/policy_registry.h"

namespace skipserve::server {

inline constexpr char kPoliciesHealthService[] = "skipserve.v1.Policies";

class RegistryHealthReporter {
 public:
  // Both must outlive this object.
  RegistryHealthReporter(grpc::HealthCheckServiceInterface* health,
                         const PolicyRegistry* registry,
                         absl::Duration period = absl::Milliseconds(250));
  ~RegistryHealthReporter() { Stop(); }
  RegistryHealthReporter(const RegistryHealthReporter&) = delete;
  RegistryHealthReporter& operator=(const RegistryHealthReporter&) = delete;

  void Stop();

 private:
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_REGISTRY_HEALTH_H_

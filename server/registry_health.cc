#include "server/registry_health.h"

namespace skipserve::server {

RegistryHealthReporter::RegistryHealthReporter(
    grpc::HealthCheckServiceInterface* health, const PolicyRegistry* registry,
    absl::Duration period) {
  health->SetServingStatus(kPoliciesHealthService,
                           registry->StoreStatus().health.reachable);
  thread_ = std::thread([this, health, registry, period] {
    bool reported = registry->StoreStatus().health.reachable;
    while (!stop_.WaitForNotificationWithTimeout(period)) {
      const bool reachable = registry->StoreStatus().health.reachable;
      if (reachable != reported) {
        health->SetServingStatus(kPoliciesHealthService, reachable);
        reported = reachable;
      }
    }
  });
}

void RegistryHealthReporter::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

}  // namespace skipserve::server

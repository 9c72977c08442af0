#ifndef SKIPSERVE_SERVER_ADMIN_CURL_LIBRARY_H_
#define SKIPSERVE_SERVER_ADMIN_CURL_LIBRARY_H_

// libcurl, dlopen()ed on first use by the etcd store's client
// (etcd_client.h) instead of linked.
//
// Why: a linked libcurl brings about 27 libraries into every server
// process, and the static thread-local storage of linked libraries is
// carved out of every thread's stack. prometheus-cpp's HTTP server
// (civetweb) runs /metrics on fixed 100 KiB stacks, of which OpenBLAS's TLS
// already takes 60 KiB, and the rest is only just enough: a 2.5 KB
// thread_local in our own code made a scrape overflow it (seen in the fleet
// tests); libcurl's libraries would add about 0.6 KB more. A dlopen()ed
// library's TLS is allocated apart, and a server that keeps its registry
// in a state file never loads libcurl at all.
//
// Thread safety: LoadCurl may be called from any thread; the first call
// loads the library and runs curl_global_init once.

#include <curl/curl.h>

#include "absl/status/statusor.h"

namespace skipserve::server {

// curl_easy_setopt's integer options are C longs.
using CurlLong = long;  // NOLINT(google-runtime-int): curl's type

// The libcurl functions the etcd client uses (same names without curl_).
struct CurlApi {
  CURL* (*easy_init)();
  void (*easy_cleanup)(CURL*);
  void (*easy_reset)(CURL*);
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_perform)(CURL*);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  const char* (*easy_strerror)(CURLcode);
  curl_slist* (*slist_append)(curl_slist*, const char*);
  void (*slist_free_all)(curl_slist*);
};

// libcurl.so.4 ($SKIPSERVE_LIBCURL overrides the file), loaded once.
// FAILED_PRECONDITION naming the file and dlopen's reason when it cannot
// be loaded (the package is libcurl4); the same answer on every call.
absl::StatusOr<const CurlApi*> LoadCurl();

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_CURL_LIBRARY_H_

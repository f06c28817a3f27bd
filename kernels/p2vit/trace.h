// p2vit/trace.h - optional capture of intermediate tensors in software simulation.
//
// P2VIT_TRACE(name, block, offset, ptr, len) hands len values starting at element `offset`
// of the tensor `name` of block `block` (-1 outside blocks) to the sink installed by the
// C-sim bindings for the current thread. In synthesis (__SYNTHESIS__) it expands to nothing,
// and without a sink it costs one pointer test.
//
// P2VIT_COUNT(id) counts one iteration of the pipelined (II=1) loop named id ("chunk.loop",
// a string literal) for codegen/perf.py to check its cycle model against. It expands to
// nothing unless P2VIT_COUNTERS is defined (the C-sim's "counters" build), and never under
// __SYNTHESIS__. Counts are kept per thread (no atomics in the loops); counters_flush() adds
// the calling thread's counts to the process totals that counters_read() returns.
#ifndef P2VIT_TRACE_H
#define P2VIT_TRACE_H

#ifndef __SYNTHESIS__
namespace p2vit {

struct TraceSink {
  virtual void put(const char* name, int block, long offset, long long value) = 0;
  virtual ~TraceSink() = default;
};

inline thread_local TraceSink* trace_sink = nullptr;

template <class T>
inline void trace(const char* name, int block, long offset, const T* v, int len) {
  if (!trace_sink) return;
  for (int i = 0; i < len; ++i) trace_sink->put(name, block, offset + i, (long long)(v[i]));
}

}  // namespace p2vit
#define P2VIT_TRACE(name, block, offset, ptr, len) ::p2vit::trace(name, block, offset, ptr, len)
#define P2VIT_TRACING() (::p2vit::trace_sink != nullptr)
#else
#define P2VIT_TRACE(name, block, offset, ptr, len)
#define P2VIT_TRACING() false
#endif

#if defined(P2VIT_COUNTERS) && !defined(__SYNTHESIS__)
#include <atomic>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace p2vit {
namespace counters {

constexpr int MAX_SITES = 64;  // distinct loop ids

struct Registry {
  std::mutex mu;
  const char* names[MAX_SITES] = {};
  std::atomic<int> n{0};
  std::atomic<long long> total[MAX_SITES] = {};
};

inline Registry& registry() {
  static Registry r;
  return r;
}

// site(id): the slot of loop id, the same for every macro site with that id.
inline int site(const char* id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const int n = r.n.load();
  for (int i = 0; i < n; ++i)
    if (std::strcmp(r.names[i], id) == 0) return i;
  if (n == MAX_SITES) throw std::length_error("p2vit counters: more than MAX_SITES loop ids");
  r.names[n] = id;
  r.n.store(n + 1);
  return n;
}

inline thread_local long long local[MAX_SITES] = {};

}  // namespace counters

// counters_flush(): add this thread's counts to the totals and zero them.
inline void counters_flush() {
  counters::Registry& r = counters::registry();
  for (int i = 0; i < counters::MAX_SITES; ++i)
    if (counters::local[i]) {
      r.total[i].fetch_add(counters::local[i]);
      counters::local[i] = 0;
    }
}

// counters_reset(): zero the totals and this thread's counts.
inline void counters_reset() {
  counters::Registry& r = counters::registry();
  for (int i = 0; i < counters::MAX_SITES; ++i) {
    r.total[i].store(0);
    counters::local[i] = 0;
  }
}

// counters_read(): (loop id, total iterations) for every loop id seen so far.
inline std::vector<std::pair<std::string, long long>> counters_read() {
  counters::Registry& r = counters::registry();
  std::vector<std::pair<std::string, long long>> out;
  const int n = r.n.load();
  for (int i = 0; i < n; ++i) out.emplace_back(r.names[i], r.total[i].load());
  return out;
}

}  // namespace p2vit
#define P2VIT_COUNT(id)                                                     \
  do {                                                                      \
    static const int p2vit_count_site_ = ::p2vit::counters::site(id);       \
    ++::p2vit::counters::local[p2vit_count_site_];                          \
  } while (0)
#else
#define P2VIT_COUNT(id) ((void)0)
#endif

#endif  // P2VIT_TRACE_H

// p2vit/trace.h - optional capture of intermediate tensors in software simulation.
//
// P2VIT_TRACE(name, block, offset, ptr, len) hands len values starting at element `offset`
// of the tensor `name` of block `block` (-1 outside blocks) to the sink installed by the
// C-sim bindings for the current thread. In synthesis (__SYNTHESIS__) it expands to nothing,
// and without a sink it costs one pointer test.
//
// P2VIT_COUNT(id), the first statement of every pipelined loop body, counts one iteration of
// the loop named id ("chunk.loop", a string literal) for codegen/perf.py to check its cycle
// model against, and opens that iteration until the end of the body. P2VIT_ACCESS(array, bank)
// marks one access of a bank of an on-chip array and P2VIT_AXI_BEAT(bundle) one beat read from
// an m_axi bundle; the counters build records, per loop, the most accesses one iteration made
// to one bank and the most beats it read from one bundle (counters_peaks()), which is what
// bounds the loop's II (tests/test_ii.py); P2VIT_ACCESS_STATIC also checks that the bank is one
// HLS can resolve at compile time (see below). P2VIT_READ(array, bank) and P2VIT_WRITE(array, bank),
// right after the P2VIT_ACCESS* of that bank, say which port kind the access takes, for the arrays the top binds
// ram_s2p (one read port, one write port: design.simple_dual_port_memories), which the II test
// holds to one read and one write per bank and iteration. They all expand to nothing unless P2VIT_COUNTERS
// is defined (the C-sim's "counters" build), and never under __SYNTHESIS__. Counts are kept
// per thread; counters_flush() adds the calling thread's to the process totals.
#ifndef P2VIT_TRACE_H
#define P2VIT_TRACE_H

#ifndef __SYNTHESIS__
#include <stdexcept>
#include <string>
#include <vector>

namespace p2vit {

struct TraceSink {
  virtual void put(const char* name, int block, long offset, long long value) = 0;
  virtual ~TraceSink() = default;
};

inline thread_local TraceSink* trace_sink = nullptr;

// The handoff's order (proj beside the last head group's attention, docs/hardware.md): A.V puts a
// token on `ready` once a block of rows of o is final, and proj reads a row tile's rows only after
// its token. The C-sim runs the attention before proj, so o is whole before proj reads it and a
// misplaced token would not change a value; these checks hold each side to its order instead, in
// the order its pipelined loop issues its operations (the order the hardware keeps):
//   handoff_row_written(it, n, block_rows, tokens): A.V writes row n of o in pass iteration `it`
//     after writing `tokens` tokens: throws if n's block already has its token;
//   handoff_token_written(it): A.V's next token, in iteration `it`;
//   handoff_rows_read(tile, tokens): proj reads row tile `tile` of o after reading `tokens`: throws
//     unless that tile's token is among them.
// handoff_log: where a test installs a vector, A.V's writes and tokens are appended to it as
// (iteration, event, row) triples, event 0 a row of o written, 1 a token (row -1).
inline thread_local std::vector<long>* handoff_log = nullptr;

inline void handoff_row_written(long it, int n, int block_rows, int tokens) {
  if (n / block_rows < tokens)
    throw std::logic_error("p2vit: A.V wrote row " + std::to_string(n) + " of o after its block's token on `ready`");
  if (handoff_log) handoff_log->insert(handoff_log->end(), {it, 0L, long(n)});
}

inline void handoff_token_written(long it) {
  if (handoff_log) handoff_log->insert(handoff_log->end(), {it, 1L, -1L});
}

inline void handoff_rows_read(int tile, int tokens) {
  if (tile >= tokens)
    throw std::logic_error("p2vit: proj read row tile " + std::to_string(tile) + " of o before its token on `ready`");
}

template <class T>
inline void trace(const char* name, int block, long offset, const T* v, int len) {
  if (!trace_sink) return;
  for (int i = 0; i < len; ++i) trace_sink->put(name, block, offset + i, (long long)(v[i]));
}

}  // namespace p2vit
#define P2VIT_TRACE(name, block, offset, ptr, len) ::p2vit::trace(name, block, offset, ptr, len)
#define P2VIT_TRACING() (::p2vit::trace_sink != nullptr)
#define P2VIT_CSIM_ONLY(...) __VA_ARGS__
#else
#define P2VIT_TRACE(name, block, offset, ptr, len)
#define P2VIT_TRACING() false
#define P2VIT_CSIM_ONLY(...)
#endif
// P2VIT_CSIM_ONLY(...): statements that feed only the C-sim's trace (copies that no hardware
// reads): gone under __SYNTHESIS__ rather than left to dead-code removal.

#if defined(P2VIT_COUNTERS) && !defined(__SYNTHESIS__)
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace p2vit {
namespace counters {

constexpr int MAX_SITES = 160;  // distinct loop ids and resource names

// Names: loop ids ("chunk.loop") and resources ("bank:<array>", "axi:<bundle>") share one table.
struct Registry {
  std::mutex mu;
  const char* names[MAX_SITES] = {};
  std::atomic<int> n{0};
  std::atomic<long long> total[MAX_SITES] = {};
  // (loop, resource) -> the most accesses of one bank / beats of one bundle in one iteration
  std::map<std::pair<int, int>, long long> peak;
};

inline Registry& registry() {
  static Registry r;
  return r;
}

// site(id): the slot of name id, the same for every macro site with that id.
inline int site(const char* id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const int n = r.n.load();
  for (int i = 0; i < n; ++i)
    if (std::strcmp(r.names[i], id) == 0) return i;
  if (n == MAX_SITES) throw std::length_error("p2vit counters: more than MAX_SITES names");
  r.names[n] = id;
  r.n.store(n + 1);
  return n;
}

// interned(prefix, name): the slot of "<prefix><name>" (names built at run time are kept alive).
inline int interned(const char* prefix, const char* name) {
  static std::mutex mu;
  static std::map<std::string, std::string> keep;
  std::string key = std::string(prefix) + name;
  const char* stable;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = keep.emplace(key, key).first;
    stable = it->second.c_str();
  }
  return site(stable);
}

// resource(prefix, name): interned(prefix, name), remembered per (prefix, name) pointer pair
// for this thread, so a hot loop pays a short linear search instead of a locked map lookup.
inline int resource(const char* prefix, const char* name) {
  struct Seen {
    const char* prefix;
    const char* name;
    int id;
  };
  static thread_local std::vector<Seen> seen;
  for (const Seen& x : seen)
    if (x.prefix == prefix && x.name == name) return x.id;
  const int id = interned(prefix, name);
  seen.push_back({prefix, name, id});
  return id;
}

inline thread_local long long local[MAX_SITES] = {};
// This thread's peaks: [loop][resource] -> the most accesses in one iteration. A flat table, not a
// map: every counted iteration's end updates it.
inline thread_local long long local_peak[MAX_SITES][MAX_SITES] = {};

constexpr int MAX_NESTING = 16;  // counted loops open at once (a pipelined loop inside a counted one)

struct Touch {
  int resource;
  long bank;
  long long accesses;
  long long reads, writes;   // of them, those P2VIT_READ / P2VIT_WRITE marked
};

// kind_site(resource, write): the slot of "read:<array>" (write false) or "write:<array>" for the
// slot of "bank:<array>", looked up once per resource and kind.
inline int kind_site(int resource, bool write) {
  static std::atomic<int> known[MAX_SITES][2] = {};   // slot + 1, 0 until looked up
  if (const int k = known[resource][write].load()) return k - 1;
  const char* name = registry().names[resource];
  if (std::strncmp(name, "bank:", 5) != 0) throw std::logic_error("p2vit counters: a read or write mark on a bundle");
  const int id = interned(write ? "write:" : "read:", name + 5);
  known[resource][write].store(id + 1);
  return id;
}

// Iter: one iteration of a pipelined loop (P2VIT_COUNT opens it at the top of the loop body and
// it closes at the end of the body). Accesses made while it is open are tallied per bank and
// per bundle; when it closes, the largest tallies go into this thread's peaks. Each nesting level
// reuses one tally buffer, so an iteration allocates nothing.
struct Iter {
  int loop;
  int depth;
  Iter* outer;
  std::vector<Touch>& tally;
  static inline thread_local Iter* current = nullptr;
  static inline thread_local std::vector<Touch> buffers[MAX_NESTING];

  static int depth_below(const Iter* outer) {
    const int d = outer ? outer->depth + 1 : 0;
    if (d >= MAX_NESTING) throw std::length_error("p2vit counters: counted loops nested deeper than MAX_NESTING");
    return d;
  }
  explicit Iter(int loop_site)
      : loop(loop_site), depth(depth_below(current)), outer(current), tally(buffers[depth]) {
    tally.clear();
    ++local[loop_site];
    current = this;
  }
  ~Iter() {
    long long* peaks = local_peak[loop];
    for (const Touch& t : tally) {
      peaks[t.resource] = std::max(peaks[t.resource], t.accesses);
      if (t.reads) {
        long long& p = peaks[kind_site(t.resource, false)];
        p = std::max(p, t.reads);
      }
      if (t.writes) {
        long long& p = peaks[kind_site(t.resource, true)];
        p = std::max(p, t.writes);
      }
    }
    current = outer;
  }
  Iter(const Iter&) = delete;
  Iter& operator=(const Iter&) = delete;

  void touch(int resource, long bank) {
    for (size_t i = 0; i < tally.size(); ++i)
      if (tally[i].resource == resource && tally[i].bank == bank) {
        ++tally[i].accesses;
        last = int(i);
        return;
      }
    tally.push_back({resource, bank, 1, 0, 0});
    last = int(tally.size()) - 1;
  }
  // mark(write, resource, bank): the port kind of the access just touched, which must be this one
  // (no second search of the tally: the hot loops touch hundreds of banks an iteration)
  void mark(bool write, int resource, long bank) {
    if (last < 0 || tally[last].resource != resource || tally[last].bank != bank)
      throw std::logic_error("p2vit counters: P2VIT_READ / P2VIT_WRITE must follow the P2VIT_ACCESS it marks");
    ++(write ? tally[last].writes : tally[last].reads);
  }
  int last = -1;   // the tally entry touched last
};

// access(resource, bank): one access of `bank` of an on-chip array, or one beat of a bundle.
inline void access(int resource, long bank) {
  if (Iter::current) Iter::current->touch(resource, bank);
}

// mark(write, resource, bank): that access (the last one made) was a read or a write.
inline void mark(bool write, int resource, long bank) {
  if (Iter::current) Iter::current->mark(write, resource, bank);
}

}  // namespace counters

// counters_flush(): add this thread's counts and peaks to the totals and zero them.
inline void counters_flush() {
  counters::Registry& r = counters::registry();
  for (int i = 0; i < counters::MAX_SITES; ++i)
    if (counters::local[i]) {
      r.total[i].fetch_add(counters::local[i]);
      counters::local[i] = 0;
    }
  std::lock_guard<std::mutex> lock(r.mu);
  for (int loop = 0; loop < counters::MAX_SITES; ++loop)
    for (int res = 0; res < counters::MAX_SITES; ++res)
      if (long long& local = counters::local_peak[loop][res]) {
        long long& p = r.peak[{loop, res}];
        p = std::max(p, local);
        local = 0;
      }
}

// counters_reset(): zero the totals, the peaks and this thread's counts.
inline void counters_reset() {
  counters::Registry& r = counters::registry();
  for (int i = 0; i < counters::MAX_SITES; ++i) {
    r.total[i].store(0);
    counters::local[i] = 0;
  }
  std::lock_guard<std::mutex> lock(r.mu);
  r.peak.clear();
  std::memset(counters::local_peak, 0, sizeof counters::local_peak);
}

// counters_read(): (loop id, total iterations) for every loop id seen so far.
inline std::vector<std::pair<std::string, long long>> counters_read() {
  counters::Registry& r = counters::registry();
  std::vector<std::pair<std::string, long long>> out;
  const int n = r.n.load();
  for (int i = 0; i < n; ++i)
    if (r.total[i].load()) out.emplace_back(r.names[i], r.total[i].load());
  return out;
}

// counters_peaks(): (loop id, resource, peak) - the most accesses one iteration of the loop made
// to one bank of the array ("bank:<array>") or beats it read from a bundle ("axi:<bundle>").
inline std::vector<std::tuple<std::string, std::string, long long>> counters_peaks() {
  counters::Registry& r = counters::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::tuple<std::string, std::string, long long>> out;
  for (const auto& kv : r.peak) out.emplace_back(r.names[kv.first.first], r.names[kv.first.second], kv.second);
  return out;
}

}  // namespace p2vit
#define P2VIT_CAT2(a, b) a##b
#define P2VIT_CAT(a, b) P2VIT_CAT2(a, b)
#define P2VIT_COUNT(id)                                                                    \
  static const int P2VIT_CAT(p2vit_site_, __LINE__) = ::p2vit::counters::site(id);        \
  ::p2vit::counters::Iter P2VIT_CAT(p2vit_iter_, __LINE__)(P2VIT_CAT(p2vit_site_, __LINE__))
#define P2VIT_ACCESS(array, bank) ::p2vit::counters::access(::p2vit::counters::resource("bank:", array), long(bank))
// P2VIT_ACCESS_STATIC(array, bank, static_bank): an access whose bank HLS must know at compile
// time (an unrolled lane hitting its own bank): the bank computed from the real indices must equal
// static_bank, a function of unrolled loop indices only, or the counters build throws.
#define P2VIT_ACCESS_STATIC(array, bank, static_bank)                                              \
  do {                                                                                             \
    if (long(bank) != long(static_bank))                                                           \
      throw std::logic_error(std::string("p2vit: ") + array + ": bank not fixed at compile time"); \
    P2VIT_ACCESS(array, bank);                                                                     \
  } while (0)
// P2VIT_ACCESS_LANE(array, bank, lane, g): lane `lane` of an unrolled loop indexing a cyclic
// partition as base*E + lane (p2vit/banks.h), g = gcd(E, factor): the lane can only reach the banks
// congruent to it mod g, a set HLS derives from the affine index. The bank must lie in that set,
// or the counters build throws.
#define P2VIT_ACCESS_LANE(array, bank, lane, g)                                                     \
  do {                                                                                             \
    if (long(bank) % long(g) != long(lane) % long(g))                                              \
      throw std::logic_error(std::string("p2vit: ") + array + ": lane outside its banks");        \
    P2VIT_ACCESS(array, bank);                                                                     \
  } while (0)
#define P2VIT_AXI_BEAT(bundle) ::p2vit::counters::access(::p2vit::counters::resource("axi:", bundle), 0)
#define P2VIT_READ(array, bank) ::p2vit::counters::mark(false, ::p2vit::counters::resource("bank:", array), long(bank))
#define P2VIT_WRITE(array, bank) ::p2vit::counters::mark(true, ::p2vit::counters::resource("bank:", array), long(bank))
#else
#define P2VIT_COUNT(id) ((void)0)
#define P2VIT_ACCESS(array, bank) ((void)0)
#define P2VIT_ACCESS_STATIC(array, bank, static_bank) ((void)0)
#define P2VIT_ACCESS_LANE(array, bank, lane, g) ((void)0)
#define P2VIT_AXI_BEAT(bundle) ((void)0)
#define P2VIT_READ(array, bank) ((void)0)
#define P2VIT_WRITE(array, bank) ((void)0)
#endif

#endif  // P2VIT_TRACE_H

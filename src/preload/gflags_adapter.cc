/*
 * gflags_adapter.cc — libhotpatch_gflags.so: the agent's only C++, talking to the process's
 * own gflags (and, through gflags, to glog's settings).
 *
 * Why a separate shared object: the agent is C so that a C program never gains libstdc++ in its
 * memory map. This object is dlopened by gflags_loader.c only after gflags' symbols were found
 * in the process, so whenever it is loaded the process is already C++ and already has gflags.
 *
 * Why it has no DT_NEEDED on libgflags or libglog: its undefined gflags symbols are bound at
 * dlopen time (RTLD_NOW) to whatever copy the program already has in the global scope —
 * Debian's libgflags.so.2.2, or a copy linked into the executable and exported. A DT_NEEDED
 * entry could load a second libgflags (with an empty registry of its own) next to a static
 * copy. glog is reached only through dlsym, because linking it would load libglog into a program
 * that has gflags but not glog, and glog's static initialisers would then add its flags to the
 * program's registry: a visible side effect of merely looking.
 *
 * gflags' SetCommandLineOption() reports failure as an empty string and throws its own error
 * text away. So before calling it the adapter checks the value against gflags' documented
 * parsing rules for the flag's type; when the value parses and gflags still refuses, the
 * program's validator refused it. The messages use gflags' own wording ("illegal value ... for
 * int32 flag ...", "failed validation of new value ...") followed by what is accepted. The
 * unit test checks that this pre-check agrees with gflags on every sample value.
 *
 * Every exported function is extern "C", catches every exception and returns an errno, so no
 * C++ exception ever unwinds into the agent's C frames. Only the hp_*_adapter_* functions are
 * exported (a version script enforces it).
 */
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <sys/auxv.h>

#include <gflags/gflags.h>

#include "gflags_adapter.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

/* The namespace gflags was built with (Debian: google; upstream's default: gflags). */
namespace gf = GFLAGS_NAMESPACE;

namespace {

/* glog's SetVLOGLevel, mangled: `int google::SetVLOGLevel(const char*, int)`. */
const char kSetVLOGLevelSymbol[] = "_ZN6google12SetVLOGLevelEPKci";
typedef int (*SetVLOGLevelFn)(const char *, int);

void say(char *why, size_t why_cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void say(char *why, size_t why_cap, const char *fmt, ...)
{
    if (!why || why_cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_cap, fmt, ap);
    va_end(ap);
}

/* ---- which flags are glog's ---------------------------------------------------------------- */

/* The base address of the object holding addr, or nullptr. */
const void *object_base(const void *addr)
{
    Dl_info info;
    if (!addr || !dladdr(addr, &info))
        return nullptr;
    return info.dli_fbase;
}

const void *main_program_base()
{
    return object_base(reinterpret_cast<const void *>(getauxval(AT_PHDR)));
}

/* The source files glog defines its flags in (0.3 to 0.7). */
bool is_glog_source(const std::string &file)
{
    static const char *const sources[] = {"logging.cc", "vlog_is_on.cc", "utilities.cc",
                                          "flags.cc"};
    size_t slash = file.find_last_of('/');
    std::string base = slash == std::string::npos ? file : file.substr(slash + 1);
    for (const char *s : sources)
        if (base == s)
            return true;
    return false;
}

/* The mangled names gflags' DEFINE_<type>(name) gives the flag's variable: namespace fL<T>,
 * and for strings (a std::string reference) the cxx11 ABI tag, or none with the old ABI. */
std::vector<std::string> flag_variable_symbols(const std::string &type, const std::string &name)
{
    static const struct {
        const char *type, *ns;
    } namespaces[] = {{"bool", "fLB"},    {"int32", "fLI"},    {"uint32", "fLU"},
                      {"int64", "fLI64"}, {"uint64", "fLU64"}, {"double", "fLD"},
                      {"string", "fLS"}};
    std::vector<std::string> out;
    for (const auto &n : namespaces) {
        if (type != n.type)
            continue;
        std::string variable = "FLAGS_" + name;
        std::string base = "_ZN" + std::to_string(strlen(n.ns)) + n.ns +
                           std::to_string(variable.size()) + variable;
        if (type == "string")
            out.push_back(base + "B5cxx11E");
        out.push_back(base + "E");
    }
    return out;
}

/*
 * A flag is glog's when its variable lives in glog's object, or when glog's object defines its
 * FLAGS_ symbol. Both are needed: glog exports only some of its flags, and an exported one that
 * the program assigns (FLAGS_logtostderr = true) gets a copy relocation, so its live variable
 * sits in the executable. When glog is linked into the executable itself there is no separate
 * object to ask, so the defining source file must be one of glog's.
 */
class GlogOwnership {
  public:
    GlogOwnership()
    {
        Dl_info info;
        void *fn = dlsym(RTLD_DEFAULT, kSetVLOGLevelSymbol);
        if (!fn || !dladdr(fn, &info))
            return;
        glog_base_ = info.dli_fbase;
        glog_in_main_ = glog_base_ == main_program_base();
        if (!glog_in_main_ && info.dli_fname)
            glog_ = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    }
    ~GlogOwnership()
    {
        if (glog_)
            dlclose(glog_);
    }
    GlogOwnership(const GlogOwnership &) = delete;
    GlogOwnership &operator=(const GlogOwnership &) = delete;

    bool owns(const gf::CommandLineFlagInfo &flag) const
    {
        if (glog_in_main_)
            return is_glog_source(flag.filename);
        if (!glog_)
            return false;
        if (object_base(flag.flag_ptr) == glog_base_)
            return true; /* the variable lives in glog (all unexported ones do) */
        for (const std::string &symbol : flag_variable_symbols(flag.type, flag.name)) {
            void *variable = dlsym(glog_, symbol.c_str());
            if (variable && object_base(variable) == glog_base_)
                return true;
        }
        return false;
    }

  private:
    void *glog_ = nullptr;           /* a reference to the loaded glog, never a new load */
    const void *glog_base_ = nullptr;
    bool glog_in_main_ = false;
};

/* ---- visiting -------------------------------------------------------------------------------- */

void visit_flag(const gf::CommandLineFlagInfo &f, bool from_glog, hp_gflag_visitor visit,
                void *ctx)
{
    hp_gflag view;
    view.name = f.name.c_str();
    view.type = f.type.c_str();
    view.value = f.current_value.c_str();
    view.default_value = f.default_value.c_str();
    view.description = f.description.c_str();
    view.file = f.filename.c_str();
    view.is_default = f.is_default;
    view.has_validator = f.has_validator_fn;
    view.from_glog = from_glog;
    visit(&view, ctx);
}

/* ---- gflags' parsing rules, to name a refusal ---------------------------------------------- */

bool all_consumed(const char *value, const char *end)
{
    return end == value + strlen(value);
}

/* gflags: a leading 0x (or 0X) means hex; a leading 0 alone does not mean octal. */
int number_base(const char *value)
{
    return value[0] == '0' && (value[1] == 'x' || value[1] == 'X') ? 16 : 10;
}

bool parses_signed(const char *value, long long min, long long max)
{
    if (!*value)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, number_base(value));
    return !errno && all_consumed(value, end) && v >= min && v <= max;
}

bool parses_unsigned(const char *value, unsigned long long max)
{
    if (!*value)
        return false;
    while (*value == ' ')
        value++;
    if (*value == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, number_base(value));
    return !errno && all_consumed(value, end) && v <= max;
}

bool parses_bool(const char *value)
{
    static const char *const words[] = {"1", "t", "true", "y", "yes", "0", "f", "false", "n", "no"};
    for (const char *w : words)
        if (strcasecmp(value, w) == 0)
            return true;
    return false;
}

bool parses_double(const char *value)
{
    if (!*value)
        return false;
    char *end;
    errno = 0;
    (void)strtod(value, &end);
    return !errno && all_consumed(value, end);
}

/* True when gflags would parse value as `type`; else *accepted says what it takes. */
bool parses_as(const std::string &type, const char *value, const char **accepted)
{
    if (type == "bool") {
        *accepted = "true, false, yes, no, 1, 0, t, f, y, n (any case)";
        return parses_bool(value);
    }
    if (type == "int32") {
        *accepted = "a whole number from -2147483648 to 2147483647 (decimal, or hex with 0x)";
        return parses_signed(value, INT32_MIN, INT32_MAX);
    }
    if (type == "uint32") {
        *accepted = "a whole number from 0 to 4294967295 (decimal, or hex with 0x)";
        return parses_unsigned(value, UINT32_MAX);
    }
    if (type == "int64") {
        *accepted = "a whole number from -9223372036854775808 to 9223372036854775807 "
                    "(decimal, or hex with 0x)";
        return parses_signed(value, LLONG_MIN, LLONG_MAX);
    }
    if (type == "uint64") {
        *accepted = "a whole number from 0 to 18446744073709551615 (decimal, or hex with 0x)";
        return parses_unsigned(value, ULLONG_MAX);
    }
    if (type == "double") {
        *accepted = "a decimal number such as 1.5 or 2e-3";
        return parses_double(value);
    }
    *accepted = "any text";
    return true; /* string */
}

int set_flag(const char *name, const char *value, hp_gflag_visitor old_and_new, void *ctx,
             char *why, size_t why_cap)
{
    gf::CommandLineFlagInfo before;
    if (!gf::GetCommandLineFlagInfo(name, &before)) {
        say(why, why_cap, "no gflags flag named '%.128s' (see 'gflags list')", name);
        return -ENOENT;
    }
    const char *accepted;
    if (!parses_as(before.type, value, &accepted)) {
        say(why, why_cap, "illegal value '%.128s' specified for %s flag '%s': expected %s", value,
            before.type.c_str(), name, accepted);
        return -EINVAL;
    }
    if (gf::SetCommandLineOption(name, value).empty()) {
        if (before.has_validator_fn)
            say(why, why_cap, "failed validation of new value '%.128s' for flag '%s': the "
                "program's validator refused it; the flag keeps %.128s", value, name,
                before.current_value.c_str());
        else
            say(why, why_cap, "gflags refused value '%.128s' for %s flag '%s'; the flag keeps "
                "%.128s", value, before.type.c_str(), name, before.current_value.c_str());
        return -EPERM;
    }
    gf::CommandLineFlagInfo after;
    if (!gf::GetCommandLineFlagInfo(name, &after))
        after = before;
    GlogOwnership glog;
    visit_flag(before, glog.owns(before), old_and_new, ctx);
    visit_flag(after, glog.owns(after), old_and_new, ctx);
    return 0;
}

} // namespace

/* ---- the C ABI ------------------------------------------------------------------------------ */

EXPORT int hp_gflags_adapter_abi(void)
{
    return HP_GFLAGS_ADAPTER_ABI;
}

EXPORT int hp_gflags_adapter_each(bool glog_only, hp_gflag_visitor visit, void *ctx, char *why,
                                  size_t why_cap)
{
    try {
        std::vector<gf::CommandLineFlagInfo> flags;
        gf::GetAllFlags(&flags);
        std::sort(flags.begin(), flags.end(),
                  [](const gf::CommandLineFlagInfo &a, const gf::CommandLineFlagInfo &b) {
                      return a.name < b.name;
                  });
        GlogOwnership glog;
        for (const auto &f : flags) {
            bool from_glog = glog.owns(f);
            if (!glog_only || from_glog)
                visit_flag(f, from_glog, visit, ctx);
        }
        return 0;
    } catch (const std::bad_alloc &) {
        say(why, why_cap, "out of memory while listing gflags");
        return -ENOMEM;
    } catch (...) {
        say(why, why_cap, "gflags failed while listing flags");
        return -EIO;
    }
}

EXPORT int hp_gflags_adapter_get(const char *name, hp_gflag_visitor visit, void *ctx, char *why,
                                 size_t why_cap)
{
    try {
        gf::CommandLineFlagInfo f;
        if (!gf::GetCommandLineFlagInfo(name, &f)) {
            say(why, why_cap, "no gflags flag named '%.128s' (see 'gflags list')", name);
            return -ENOENT;
        }
        visit_flag(f, GlogOwnership().owns(f), visit, ctx);
        return 0;
    } catch (const std::bad_alloc &) {
        say(why, why_cap, "out of memory while reading gflags flag '%.128s'", name);
        return -ENOMEM;
    } catch (...) {
        say(why, why_cap, "gflags failed while reading flag '%.128s'", name);
        return -EIO;
    }
}

EXPORT int hp_gflags_adapter_set(const char *name, const char *value,
                                 hp_gflag_visitor old_and_new, void *ctx, char *why,
                                 size_t why_cap)
{
    try {
        return set_flag(name, value, old_and_new, ctx, why, why_cap);
    } catch (const std::bad_alloc &) {
        say(why, why_cap, "out of memory while setting gflags flag '%.128s'", name);
        return -ENOMEM;
    } catch (...) {
        say(why, why_cap, "gflags failed while setting flag '%.128s' (nothing reported)", name);
        return -EIO;
    }
}

EXPORT int hp_glog_adapter_set_vlog(const char *pattern, int level, int *previous, char *why,
                                    size_t why_cap)
{
    auto set_vlog_level =
        reinterpret_cast<SetVLOGLevelFn>(dlsym(RTLD_DEFAULT, kSetVLOGLevelSymbol));
    if (!set_vlog_level) {
        say(why, why_cap, "this process has no glog");
        return -ENOSYS;
    }
    try {
        *previous = set_vlog_level(pattern, level);
        return 0;
    } catch (const std::bad_alloc &) {
        say(why, why_cap, "out of memory in glog's SetVLOGLevel");
        return -ENOMEM;
    } catch (...) {
        say(why, why_cap, "glog's SetVLOGLevel failed (nothing reported)");
        return -EIO;
    }
}

/*
 * hotpatch.hpp — the C++ spelling of the hotpatch API, as the original C++ library had it:
 *
 *   hotpatch::RegisterVariable("age", &age);              // int, long, double, bool, ...
 *   hotpatch::RegisterVariable("user_name", &user_name);  // std::string
 *   hotpatch::RegisterFunction("add_func", reinterpret_cast<void *>(add_func));
 *   hotpatch::Start();
 *
 * Everything here is a thin inline layer over hotpatch.h; errors are the C API's negative
 * errno values, and the thread-safety rules are the same. A std::string cannot be replaced
 * atomically: the agent assigns it under the registry lock, so a program that reads it from
 * other threads while an operator may change it should read it with hotpatch::ReadString(),
 * which takes the same lock, or register a change callback and keep its own copy.
 */
#ifndef HOTPATCH_HPP
#define HOTPATCH_HPP

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

#include "hotpatch.h"

namespace hotpatch {

namespace detail {
template <typename T> struct TypeOf;
template <> struct TypeOf<bool> { static constexpr hotpatch_type value = HOTPATCH_TYPE_BOOL; };
template <> struct TypeOf<int> { static constexpr hotpatch_type value = HOTPATCH_TYPE_INT; };
template <> struct TypeOf<unsigned> { static constexpr hotpatch_type value = HOTPATCH_TYPE_UINT; };
template <> struct TypeOf<long> { static constexpr hotpatch_type value = HOTPATCH_TYPE_LONG; };
template <> struct TypeOf<unsigned long> {
    static constexpr hotpatch_type value = HOTPATCH_TYPE_ULONG;
};
template <> struct TypeOf<long long> { static constexpr hotpatch_type value = HOTPATCH_TYPE_LLONG; };
template <> struct TypeOf<unsigned long long> {
    static constexpr hotpatch_type value = HOTPATCH_TYPE_ULLONG;
};
template <> struct TypeOf<float> { static constexpr hotpatch_type value = HOTPATCH_TYPE_FLOAT; };
template <> struct TypeOf<double> { static constexpr hotpatch_type value = HOTPATCH_TYPE_DOUBLE; };
template <> struct TypeOf<short> { static constexpr hotpatch_type value = HOTPATCH_TYPE_SHORT; };
template <> struct TypeOf<unsigned short> {
    static constexpr hotpatch_type value = HOTPATCH_TYPE_USHORT;
};
template <> struct TypeOf<signed char> {
    static constexpr hotpatch_type value = HOTPATCH_TYPE_SCHAR;
};
template <> struct TypeOf<unsigned char> {
    static constexpr hotpatch_type value = HOTPATCH_TYPE_UCHAR;
};

/* Accessors for a std::string; they run on the agent thread under the registry lock. */
inline int GetStdString(void *user, char *out, size_t cap)
{
    const std::string &s = *static_cast<const std::string *>(user);
    size_t n = s.size() < cap - 1 ? s.size() : cap - 1;
    std::memcpy(out, s.data(), n);
    out[n] = '\0';
    return s.size() < cap ? static_cast<int>(s.size()) : -ENAMETOOLONG;
}

inline int SetStdString(void *user, const char *value, char *why, size_t why_cap)
{
    try {
        static_cast<std::string *>(user)->assign(value);
        return 0;
    } catch (...) {
        std::snprintf(why, why_cap, "cannot store the value (out of memory)");
        return 1;
    }
}
} // namespace detail

/* Registers a numeric or bool variable; the type comes from the pointer. */
template <typename T> inline int RegisterVariable(const char *name, T *value)
{
    static_assert(std::is_arithmetic<T>::value, "use a numeric, bool or std::string variable");
    return hotpatch_register_typed(name, detail::TypeOf<T>::value, value, nullptr, nullptr,
                                   nullptr);
}

/* Registers a std::string variable. */
inline int RegisterVariable(const char *name, std::string *value)
{
    hotpatch_string_accessor accessor = {detail::GetStdString, detail::SetStdString, value};
    return hotpatch_register_string_accessor(name, &accessor);
}

/* Registers a function that `func upgrade` may replace. */
inline int RegisterFunction(const char *name, void *fn)
{
    return hotpatch_register_function(name, fn);
}

/* Reads a registered string variable under the registry lock ("" when there is none). */
inline std::string ReadString(const char *name)
{
    char buf[4096];
    int n = hotpatch_get_string(name, buf, sizeof buf);
    return n >= 0 || n == -ENAMETOOLONG ? std::string(buf) : std::string();
}

/* hotpatch_unregister(), hotpatch_start() and hotpatch_stop() of the C API. */
inline int Unregister(const char *name) { return hotpatch_unregister(name); }
inline int Start() { return hotpatch_start(); }
inline int Stop() { return hotpatch_stop(); }

} // namespace hotpatch

#endif /* HOTPATCH_HPP */

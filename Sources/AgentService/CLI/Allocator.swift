#if canImport(CMimalloc)
    import CMimalloc
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// The memory allocator the process runs on (README, "Memory allocator"), for the start-up log.
enum Allocator {
    /// "mimalloc 2.0.9" when mimalloc serves the process's `malloc` (checked, not assumed), else what does.
    static var description: String {
        #if canImport(CMimalloc)
            let version = Int(mi_version())
            let name = "mimalloc \(version / 100).\(version / 10 % 10).\(version % 10)"
            guard let probe = malloc(16) else { return name }
            defer { free(probe) }
            return mi_is_in_heap_region(probe) ? name : "the C library's malloc (\(name) is linked but not in use)"
        #else
            return "the C library's malloc"
        #endif
    }
}

// SwiftPM links every executable through swiftc, whose start-up object (swiftrt.o) registers the
// image with the Swift runtime. capsule-worker has no Swift code, so these do nothing; defining
// them here lets scripts/build drop libswiftCore from the worker (patchelf --remove-needed),
// which saves ~1.5 ms per sandbox start and keeps the Swift runtime out of the sandbox's root.
#include <stdbool.h>

void swift_addNewDSOImage(const void *header);
void swift_addNewDSOImage(const void *header) { (void)header; }

bool _swift_backtrace_isThunkFunction(const char *name);
bool _swift_backtrace_isThunkFunction(const char *name) { (void)name; return false; }

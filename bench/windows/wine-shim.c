/*
 * bcryptprimitives.dll for running canopy.exe under Wine 8.0 (Debian
 * bookworm's), built by bench/windows.sh and placed beside the exe. Test
 * tooling only: never ship it. On Windows the system's own
 * bcryptprimitives.dll is a KnownDLL and is loaded instead of any file
 * beside the exe, so this one is never even read there.
 *
 * It papers over two gaps in Wine 8.0, and nothing else (docs/WINDOWS.md):
 *
 * 1. ProcessPrng. Rust's standard library (1.78 and later) and getrandom
 *    0.3/0.4 take random bytes from ProcessPrng in bcryptprimitives.dll,
 *    which Windows 10 and later have and Wine 8.0 lacks (Wine has it since
 *    8.13): the loader refuses to start an exe with a missing import. Ours
 *    fills the buffer from RtlGenRandom (advapi32's SystemFunction036),
 *    which Wine backs with the host's kernel generator.
 *
 * 2. Two socket options quinn-udp 0.5 (quinn 0.11's UDP layer) insists on.
 *    Opening an endpoint, it enables ECN reports with IP_RECVECN or
 *    IPV6_RECVECN (option 50), which Wine does not implement (WSAENOPROTOOPT,
 *    "fixme:winsock:setsockopt Unknown IPPROTO_IP optname 0x00000032"), and
 *    reads IPV6_V6ONLY even on an IPv4 socket, which Wine refuses
 *    (WSAEOPNOTSUPP) where Windows answers. Either error makes quinn-udp
 *    give up, so no QUIC endpoint can open. When this DLL loads, it points
 *    the exe's imports of setsockopt and getsockopt at wrappers that call
 *    Wine's, and only when Wine fails one of exactly these calls, answer as
 *    Windows would. ECN marks are then simply never reported, which QUIC
 *    tolerates (it is how a path that bleaches ECN looks). quinn-udp 0.6
 *    treats a missing ECN option as "no ECN" itself (quinn PR #2532); once
 *    Canopy's quinn uses it, part 2 can go.
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

/* ---- 1. ProcessPrng ------------------------------------------------- */

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a 32-bit length: fill in slices. */
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE; /* Windows' never fails either; Rust aborts if it did. */
}

/* ---- 2. The socket options Wine 8.0 lacks --------------------------- */

#ifndef IP_RECVECN
#define IP_RECVECN 50
#endif
#ifndef IPV6_RECVECN
#define IPV6_RECVECN 50
#endif

typedef int (WSAAPI *setsockopt_fn)(SOCKET, int, int, const char *, int);
typedef int (WSAAPI *getsockopt_fn)(SOCKET, int, int, char *, int *);
static setsockopt_fn wine_setsockopt;
static getsockopt_fn wine_getsockopt;

static int WSAAPI shim_setsockopt(SOCKET s, int level, int name, const char *value, int len)
{
    int rc = wine_setsockopt(s, level, name, value, len);
    if (rc != 0 && ((level == IPPROTO_IP && name == IP_RECVECN)
                    || (level == IPPROTO_IPV6 && name == IPV6_RECVECN))) {
        int error = WSAGetLastError();
        if (error == WSAENOPROTOOPT || error == WSAEOPNOTSUPP) {
            WSASetLastError(0);
            return 0; /* "ECN reports on": none will ever arrive. */
        }
    }
    return rc;
}

static int WSAAPI shim_getsockopt(SOCKET s, int level, int name, char *value, int *len)
{
    int rc = wine_getsockopt(s, level, name, value, len);
    if (rc != 0 && level == IPPROTO_IPV6 && name == IPV6_V6ONLY && value && len && *len > 0) {
        struct sockaddr_storage local;
        int local_len = sizeof local;
        int error = WSAGetLastError();
        if ((error == WSAENOPROTOOPT || error == WSAEOPNOTSUPP)
            && getsockname(s, (struct sockaddr *)&local, &local_len) == 0
            && local.ss_family == AF_INET) {
            /* An IPv4 socket is not a dual-stack one: answer "v6 only" (1),
               a DWORD as Windows writes it. */
            memset(value, 0, (size_t)*len);
            value[0] = 1;
            if (*len > (int)sizeof(DWORD))
                *len = sizeof(DWORD);
            WSASetLastError(0);
            return 0;
        }
        WSASetLastError(error);
    }
    return rc;
}

/* Points every import slot of `module` that holds Wine's setsockopt or
   getsockopt at the wrappers above. */
static void redirect_imports(HMODULE module)
{
    BYTE *base = (BYTE *)module;
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)base;
    IMAGE_NT_HEADERS *nt = (IMAGE_NT_HEADERS *)(base + dos->e_lfanew);
    IMAGE_DATA_DIRECTORY imports = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    IMAGE_IMPORT_DESCRIPTOR *library;

    if (imports.VirtualAddress == 0)
        return;
    for (library = (IMAGE_IMPORT_DESCRIPTOR *)(base + imports.VirtualAddress); library->Name; library++) {
        IMAGE_THUNK_DATA *slot;
        for (slot = (IMAGE_THUNK_DATA *)(base + library->FirstThunk); slot->u1.Function; slot++) {
            void *target = NULL;
            DWORD old;
            if ((void *)slot->u1.Function == (void *)wine_setsockopt)
                target = (void *)shim_setsockopt;
            else if ((void *)slot->u1.Function == (void *)wine_getsockopt)
                target = (void *)shim_getsockopt;
            if (target && VirtualProtect(&slot->u1.Function, sizeof(void *), PAGE_READWRITE, &old)) {
                slot->u1.Function = (ULONG_PTR)target;
                VirtualProtect(&slot->u1.Function, sizeof(void *), old, &old);
            }
        }
    }
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) {
        /* The exe's imports are bound before any DllMain runs. ws2_32 is
           already loaded if the exe imports it; if not, there is nothing to
           redirect. */
        HMODULE winsock = GetModuleHandleA("ws2_32.dll");
        if (winsock) {
            wine_setsockopt = (setsockopt_fn)(void *)GetProcAddress(winsock, "setsockopt");
            wine_getsockopt = (getsockopt_fn)(void *)GetProcAddress(winsock, "getsockopt");
            if (wine_setsockopt && wine_getsockopt)
                redirect_imports(GetModuleHandleA(NULL));
        }
    }
    return TRUE;
}

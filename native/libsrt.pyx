# cython: language_level=3
"""Thin binding to libsrt (Haivision's reference SRT, Debian ``libsrt-openssl-dev``).

Listener sockets, accept, message receive, close, the options an ingest needs, and libsrt's
own epoll. Sockets are non-blocking; the one blocking call, ``SrtPoller.wait``, releases the
GIL, so a worker thread can wait on every SRT socket at once while the event loop runs.
Retransmission, encryption and pacing are libsrt's.
"""

from libc.stdint cimport int64_t
from libc.string cimport memset


cdef extern from "<netinet/in.h>":
    ctypedef unsigned short sa_family_t
    cdef struct in_addr:
        unsigned int s_addr
    cdef struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    cdef struct sockaddr_storage:
        sa_family_t ss_family
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)
    int AF_INET

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    cdef struct sockaddr:
        sa_family_t sa_family

cdef extern from "<arpa/inet.h>":
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)


cdef extern from "srt/srt.h" nogil:
    ctypedef int SRTSOCKET
    SRTSOCKET SRT_INVALID_SOCK
    int SRT_ERROR
    int SRT_LIVE_MAX_PLSIZE
    ctypedef enum SRT_SOCKOPT:
        SRTO_SNDSYN
        SRTO_RCVSYN
        SRTO_LATENCY
        SRTO_PASSPHRASE
        SRTO_PBKEYLEN
        SRTO_STREAMID
        SRTO_PEERIDLETIMEO
    ctypedef enum SRT_SOCKSTATUS:
        SRTS_CONNECTED
    enum:
        SRT_EPOLL_IN
        SRT_EPOLL_ERR
    int SRT_EASYNCRCV
    ctypedef struct SRT_EPOLL_EVENT:
        SRTSOCKET fd
        int events

    int srt_startup()
    int srt_cleanup()
    SRTSOCKET srt_create_socket()
    int srt_bind(SRTSOCKET u, const sockaddr* name, int namelen)
    int srt_listen(SRTSOCKET u, int backlog)
    SRTSOCKET srt_accept(SRTSOCKET u, sockaddr* addr, int* addrlen)
    int srt_close(SRTSOCKET u)
    int srt_recvmsg(SRTSOCKET u, char* buf, int len)
    int srt_setsockflag(SRTSOCKET u, SRT_SOCKOPT opt, const void* optval, int optlen)
    int srt_getsockflag(SRTSOCKET u, SRT_SOCKOPT opt, void* optval, int* optlen)
    int srt_getsockname(SRTSOCKET u, sockaddr* name, int* namelen)
    int srt_getpeername(SRTSOCKET u, sockaddr* name, int* namelen)
    SRT_SOCKSTATUS srt_getsockstate(SRTSOCKET u)
    int srt_getlasterror(int* errno_loc)
    const char* srt_getlasterror_str()
    void srt_clearlasterror()
    int srt_epoll_create()
    int srt_epoll_add_usock(int eid, SRTSOCKET u, const int* events)
    int srt_epoll_remove_usock(int eid, SRTSOCKET u)
    int srt_epoll_uwait(int eid, SRT_EPOLL_EVENT* fdsSet, int fdsSize, int64_t msTimeOut)
    int srt_epoll_release(int eid)
    void srt_setloglevel(int ll)
    ctypedef int srt_listen_callback_fn(void* opaq, SRTSOCKET ns, int hsversion,
                                        const sockaddr* peeraddr, const char* streamid)
    int srt_listen_callback(SRTSOCKET lsn, srt_listen_callback_fn* hook_fn, void* hook_opaque)
    int srt_setrejectreason(SRTSOCKET sock, int value)


#: libsrt's own error codes a caller may want to tell apart.
EASYNCRCV = SRT_EASYNCRCV
EPOLL_IN = SRT_EPOLL_IN
EPOLL_ERR = SRT_EPOLL_ERR
#: The largest payload of one live-mode message (MTU 1500 - UDP - SRT headers).
LIVE_MAX_PAYLOAD = SRT_LIVE_MAX_PLSIZE
_LOG_ERR = 3  # syslog LOG_ERR: libsrt prints only errors


class SrtError(OSError):
    """A libsrt call failed; ``code`` is libsrt's error code (``srt_getlasterror``)."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code


cdef _raise(str what):
    cdef int code = srt_getlasterror(NULL)
    message = srt_getlasterror_str().decode("utf-8", "replace")
    srt_clearlasterror()
    raise SrtError(code, f"{what}: {message}")


cdef int _started = 0


def startup():
    """Start libsrt once per process (its worker threads and UDP multiplexers)."""
    global _started
    if not _started:
        if srt_startup() < 0:
            _raise("srt_startup")
        srt_setloglevel(_LOG_ERR)
        _started = 1


cdef str _address(sockaddr_storage* storage):
    cdef char text[64]
    cdef sockaddr_in* sin = <sockaddr_in*>storage
    if storage.ss_family != AF_INET:
        return "?"
    inet_ntop(AF_INET, &sin.sin_addr, text, sizeof(text))
    return f"{text.decode()}:{ntohs(sin.sin_port)}"


cdef int _listen_hook(void* opaq, SRTSOCKET ns, int hsversion, const sockaddr* peeraddr,
                      const char* streamid) noexcept with gil:
    # libsrt's thread, during the handshake: the check returns 0 (accept) or a reject code.
    cdef int code
    raw = b"" if streamid == NULL else <bytes>streamid
    try:
        peer = "?" if peeraddr == NULL else _address(<sockaddr_storage*>peeraddr)
        code = (<object>opaq)(raw, peer)
    except BaseException:
        code = 1400  # SRT_REJX_BAD_REQUEST: never let an exception escape into libsrt
    if code:
        srt_setrejectreason(ns, code)
        return -1
    return 0



cdef class SrtSocket:
    """One SRT socket (a listener or an accepted connection); non-blocking once set up."""

    cdef readonly int fd
    cdef bytearray _buffer
    cdef object _check

    def __cinit__(self, int fd=-1):
        self.fd = fd
        self._buffer = bytearray(SRT_LIVE_MAX_PLSIZE)

    @staticmethod
    def listener(str host, int port, *, int latency_ms=120, str passphrase="", int pbkeylen=0,
                 int backlog=16, int peer_idle_ms=5000, check=None):
        """A bound, listening socket; options set here are inherited by accepted sockets.
        ``check``: see :meth:`set_listen_check` (installed before listening starts)."""
        startup()
        cdef SRTSOCKET fd = srt_create_socket()
        if fd == SRT_INVALID_SOCK:
            _raise("srt_create_socket")
        sock = SrtSocket(fd)
        try:
            sock._set_int(SRTO_RCVSYN, 0)
            sock._set_int(SRTO_LATENCY, latency_ms)
            sock._set_int(SRTO_PEERIDLETIMEO, peer_idle_ms)
            if passphrase:
                sock._set_bytes(SRTO_PASSPHRASE, passphrase.encode())
                if pbkeylen:
                    sock._set_int(SRTO_PBKEYLEN, pbkeylen)
            sock._bind(host, port)
            if check is not None:
                sock.set_listen_check(check)
            if srt_listen(fd, backlog) == SRT_ERROR:
                _raise("srt_listen")
        except BaseException:
            sock.close()
            raise
        return sock

    cdef _set_int(self, SRT_SOCKOPT opt, int value):
        if srt_setsockflag(self.fd, opt, &value, sizeof(int)) == SRT_ERROR:
            _raise(f"srt_setsockflag({<int>opt})")

    cdef _set_bytes(self, SRT_SOCKOPT opt, bytes value):
        if srt_setsockflag(self.fd, opt, <const char*>value, len(value)) == SRT_ERROR:
            _raise(f"srt_setsockflag({<int>opt})")

    cdef _bind(self, str host, int port):
        cdef sockaddr_in sin
        memset(&sin, 0, sizeof(sin))
        sin.sin_family = AF_INET
        sin.sin_port = htons(port)
        if inet_pton(AF_INET, host.encode(), &sin.sin_addr) != 1:
            raise ValueError(f"SRT listens on IPv4 addresses, not {host!r}")
        if srt_bind(self.fd, <sockaddr*>&sin, sizeof(sin)) == SRT_ERROR:
            _raise(f"srt_bind({host}:{port})")

    def set_listen_check(self, check):
        """Call ``check(stream_id: bytes, peer: str) -> int`` during each caller's handshake,
        on libsrt's thread (with the GIL): 0 accepts, else the caller is rejected with that code
        (``SRT_REJX_*``, e.g. 1401 unauthorized) and never reaches ``accept``."""
        self._check = check  # kept alive as long as the listener
        if srt_listen_callback(self.fd, _listen_hook, <void*>check) == SRT_ERROR:
            _raise("srt_listen_callback")

    def get_int(self, str name):
        """An integer option by name: ``latency``, ``pbkeylen``, ``peer_idle_ms``, ``rcvsyn``."""
        cdef int value = 0
        cdef int size = sizeof(int)
        cdef SRT_SOCKOPT opt = _INT_OPTIONS[name]
        if srt_getsockflag(self.fd, opt, &value, &size) == SRT_ERROR:
            _raise(f"srt_getsockflag({name})")
        return value

    @property
    def stream_id(self):
        """The caller's SRTO_STREAMID (at most 512 bytes, as libsrt bounds it), raw."""
        cdef char value[513]
        cdef int size = 512
        if srt_getsockflag(self.fd, SRTO_STREAMID, value, &size) == SRT_ERROR:
            _raise("srt_getsockflag(streamid)")
        return value[:size]

    @property
    def local_port(self):
        cdef sockaddr_storage storage
        cdef int size = sizeof(storage)
        if srt_getsockname(self.fd, <sockaddr*>&storage, &size) == SRT_ERROR:
            _raise("srt_getsockname")
        return ntohs((<sockaddr_in*>&storage).sin_port)

    def accept(self):
        """(socket, peer address) of a pending caller, or ``None`` if there is none now."""
        cdef sockaddr_storage storage
        cdef int size = sizeof(storage)
        cdef SRTSOCKET fd
        with nogil:
            fd = srt_accept(self.fd, <sockaddr*>&storage, &size)
        if fd == SRT_INVALID_SOCK:
            if srt_getlasterror(NULL) == SRT_EASYNCRCV:
                srt_clearlasterror()
                return None
            _raise("srt_accept")
        sock = SrtSocket(fd)
        sock._set_int(SRTO_RCVSYN, 0)
        return sock, _address(&storage)

    def recv(self):
        """One message (≤ ``LIVE_MAX_PAYLOAD`` bytes), ``None`` if none is ready; raises
        :class:`SrtError` once the connection is broken or closed."""
        cdef int n
        cdef char* buf = self._buffer
        with nogil:
            n = srt_recvmsg(self.fd, buf, SRT_LIVE_MAX_PLSIZE)
        if n == SRT_ERROR:
            if srt_getlasterror(NULL) == SRT_EASYNCRCV:
                srt_clearlasterror()
                return None
            _raise("srt_recvmsg")
        return bytes(self._buffer[:n])

    @property
    def connected(self):
        return srt_getsockstate(self.fd) == SRTS_CONNECTED

    def close(self):
        """Close (idempotent); a connected caller sees the shutdown."""
        cdef SRTSOCKET fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        with nogil:
            srt_close(fd)

    def __dealloc__(self):
        if self.fd >= 0:
            srt_close(self.fd)


_INT_OPTIONS = {
    "latency": SRTO_LATENCY,
    "pbkeylen": SRTO_PBKEYLEN,
    "peer_idle_ms": SRTO_PEERIDLETIMEO,
    "rcvsyn": SRTO_RCVSYN,
}


cdef class SrtPoller:
    """libsrt's epoll over SRT sockets; ``wait`` blocks without the GIL."""

    cdef int eid
    cdef SRT_EPOLL_EVENT events[64]

    def __cinit__(self):
        startup()
        self.eid = srt_epoll_create()
        if self.eid < 0:
            _raise("srt_epoll_create")

    def add(self, SrtSocket sock):
        cdef int flags = SRT_EPOLL_IN | SRT_EPOLL_ERR
        if srt_epoll_add_usock(self.eid, sock.fd, &flags) == SRT_ERROR:
            _raise("srt_epoll_add_usock")

    def remove(self, int fd):
        srt_epoll_remove_usock(self.eid, fd)
        srt_clearlasterror()

    def wait(self, int timeout_ms):
        """[(socket fd, events)] ready within ``timeout_ms``; [] on timeout."""
        cdef int n
        with nogil:
            n = srt_epoll_uwait(self.eid, self.events, 64, timeout_ms)
        if n < 0:
            srt_clearlasterror()  # a timeout, or nothing left to wait on
            return []
        return [(self.events[i].fd, self.events[i].events) for i in range(n)]

    def close(self):
        if self.eid >= 0:
            srt_epoll_release(self.eid)
            self.eid = -1

    def __dealloc__(self):
        if self.eid >= 0:
            srt_epoll_release(self.eid)

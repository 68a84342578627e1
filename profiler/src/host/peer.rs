//! Who is at the other end of a TCP connection: its address, and for a
//! connection over loopback the user that owns the peer's socket, asked of
//! the kernel by the connection's four addresses (sock_diag, as `ss` does).
//! Local users, a local Prometheus and a local Alloy all connect from
//! 127.0.0.1; the user tells them apart, so a limit per client is one per
//! local user there.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A client whose share of a limit is counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub address: IpAddr,
    /// The owner of the peer's socket, for a loopback connection.
    pub user: Option<u32>,
}

impl Client {
    /// The client at `peer` of a connection accepted on `local`.
    pub fn of(local: SocketAddr, peer: SocketAddr) -> Client {
        let address = peer.ip().to_canonical();
        let user = if address.is_loopback() {
            socket_owner(peer, local)
        } else {
            None
        };
        Client { address, user }
    }

    /// A client of a Unix socket, known by its user (SO_PEERCRED): one
    /// client with that user's loopback connections.
    pub fn local_user(uid: u32) -> Client {
        Client {
            address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            user: Some(uid),
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.user {
            Some(uid) => write!(f, "{} (uid {uid})", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const INET_DIAG_NOCOOKIE: u32 = !0;

/// struct inet_diag_sockid (linux/inet_diag.h): ports and addresses in
/// network byte order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// struct nlmsghdr, then struct inet_diag_req_v2.
#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// struct nlmsghdr, then struct inet_diag_msg.
#[repr(C)]
#[derive(Clone, Copy)]
struct Answer {
    header: libc::nlmsghdr,
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// The owner of the TCP socket bound to `source` and connected to
/// `destination`, on this host (network namespace); `None` when the kernel
/// does not say.
fn socket_owner(source: SocketAddr, destination: SocketAddr) -> Option<u32> {
    let (family, src, dst) = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => (
            libc::AF_INET,
            [u32::from_ne_bytes(s.ip().octets()), 0, 0, 0],
            [u32::from_ne_bytes(d.ip().octets()), 0, 0, 0],
        ),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => (libc::AF_INET6, words(&s), words(&d)),
        _ => return None,
    };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: NLM_F_REQUEST,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        id: SockId {
            sport: source.port().to_be(),
            dport: destination.port().to_be(),
            src,
            dst,
            interface: 0,
            cookie: [INET_DIAG_NOCOOKIE; 2],
        },
    };
    // SAFETY: Answer is plain integers, for which all zeroes is a value.
    let mut answer: Answer = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscalls on a socket this function owns, with buffers
    // of the sizes given.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return None;
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        use std::os::fd::{AsRawFd, FromRawFd};
        // The kernel answers at once; a bound keeps a surprise from
        // stalling the accept loop.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let sent = libc::send(
            fd.as_raw_fd(),
            &request as *const _ as *const libc::c_void,
            std::mem::size_of::<Request>(),
            0,
        );
        if sent != std::mem::size_of::<Request>() as isize {
            return None;
        }
        let received = libc::recv(
            fd.as_raw_fd(),
            &mut answer as *mut _ as *mut libc::c_void,
            std::mem::size_of::<Answer>(),
            0,
        );
        if received < std::mem::size_of::<Answer>() as isize
            || answer.header.nlmsg_type == NLMSG_ERROR
            || answer.header.nlmsg_type != SOCK_DIAG_BY_FAMILY
        {
            return None;
        }
    }
    // The socket asked about, not another the kernel matched.
    (answer.id.sport == request.id.sport && answer.id.dport == request.id.dport)
        .then_some(answer.uid)
}

fn words(address: &std::net::SocketAddrV6) -> [u32; 4] {
    let octets = address.ip().octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([
            octets[4 * i],
            octets[4 * i + 1],
            octets[4 * i + 2],
            octets[4 * i + 3],
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_user_at_the_other_end_of_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let client = Client::of(accepted.local_addr().unwrap(), peer);
        assert_eq!(client.address, peer.ip());
        assert_eq!(client.user, Some(unsafe { libc::geteuid() }));
        // No such connection: no user.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_owner(nobody, nobody), None);
    }
}

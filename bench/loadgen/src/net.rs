//! Socket set-up for the load generator: non-blocking IPv4 connects from a chosen loopback source
//! address, with `IP_BIND_ADDRESS_NO_PORT` set before `bind()` so the kernel picks the source
//! port at `connect()` time (per 4-tuple, which lifts the ~28k ephemeral port limit per source
//! address), and the plan that spreads clients over source addresses.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Starts a non-blocking connect from `src` (any port) to `dst`.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    set_bind_no_port(&sock)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(sock.into()))
}

fn set_bind_no_port(sock: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Source address of client number `global_index` (counted across all load processes):
/// `per_source` consecutive clients share one address, starting at `base`.
pub fn source_for(base: Ipv4Addr, per_source: u32, global_index: u32) -> Ipv4Addr {
    let step = global_index / per_source.max(1);
    let addr = u32::from(base).wrapping_add(step);
    // Stay inside 127.0.0.0/8 and skip .0 / .255 host parts, which some setups treat specially.
    let addr = 0x7f00_0000 | (addr & 0x00ff_ffff);
    match addr & 0xff {
        0 => Ipv4Addr::from(addr | 1),
        255 => Ipv4Addr::from(addr - 1),
        _ => Ipv4Addr::from(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn sources_advance_every_per_source_clients() {
        let base = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(source_for(base, 5000, 0), base);
        assert_eq!(source_for(base, 5000, 4999), base);
        assert_eq!(source_for(base, 5000, 5000), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            source_for(Ipv4Addr::new(127, 0, 0, 254), 1, 1),
            Ipv4Addr::new(127, 0, 0, 254)
        );
        assert_eq!(
            source_for(Ipv4Addr::new(127, 255, 255, 254), 1, 3).octets()[0],
            127
        );
    }

    #[test]
    fn connects_from_the_chosen_source() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = listener.local_addr().unwrap();
        let src = Ipv4Addr::new(127, 0, 0, 7);
        let _stream = connect_from(src, dst).unwrap();
        let (_conn, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(src));
    }
}
